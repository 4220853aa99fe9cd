// bpf_obj_pin of a map or program fd to a bpffs path.
#ifndef KBP_ADDON_PIN_WORKER_H
#define KBP_ADDON_PIN_WORKER_H

#include <napi.h>

#include <string>

#include "promise_worker.h"
#include "resource.h"

namespace kbp {

class PinWorker : public PromiseWorker {
 public:
  PinWorker(Napi::Env env, Resource::Lease lease, int fd, std::string path);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  Resource::Lease lease_;
  int fd_;
  std::string path_;
};

}  // namespace kbp

#endif  // KBP_ADDON_PIN_WORKER_H
