// Opens an ELF object and loads it: maps are resized as asked, maps declared
// with LIBBPF_PIN_BY_NAME are reused from (or pinned to) the pin root, and
// programs go through the verifier. A verifier rejection comes back with the
// end of the verifier log in the error message.
#ifndef KBP_ADDON_OBJECT_LOADER_H
#define KBP_ADDON_OBJECT_LOADER_H

#include <napi.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bpf_info.h"
#include "promise_worker.h"

struct bpf_object;

namespace kbp {

struct LoadedMap {
  std::string name;  // as declared in the object (not truncated)
  int fd;
  MapInfo info;
};

struct LoadedProgram {
  std::string name;
  int fd;
  ProgInfo info;
};

class ObjectLoadWorker : public PromiseWorker {
 public:
  ObjectLoadWorker(Napi::Env env, std::string path, std::string pin_root,
                   std::vector<std::pair<std::string, uint32_t>> max_entries);
  ~ObjectLoadWorker() override;

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;

  std::string path_;
  std::string pin_root_;
  std::vector<std::pair<std::string, uint32_t>> max_entries_;
  bpf_object* obj_ = nullptr;
  std::vector<LoadedMap> maps_;
  std::vector<LoadedProgram> programs_;
};

}  // namespace kbp

#endif  // KBP_ADDON_OBJECT_LOADER_H
