#include "pin_worker.h"

#include <bpf/bpf.h>

#include <utility>

namespace kbp {

PinWorker::PinWorker(Napi::Env env, Resource::Lease lease, int fd, std::string path)
    : PromiseWorker(env, "kbp:obj_pin"), lease_(std::move(lease)), fd_(fd), path_(std::move(path)) {}

void PinWorker::Work() {
  int err = bpf_obj_pin(fd_, path_.c_str());
  if (err != 0) Fail(err, "bpf_obj_pin", path_);
}

Napi::Value PinWorker::Result(Napi::Env env) { return env.Undefined(); }

}  // namespace kbp
