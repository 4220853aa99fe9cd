// BpfObject: a loaded ELF object. It owns the libbpf object (and with it
// every map and program fd); its maps and programs are created once at load
// and handed out as the same wrappers every time. close() releases the
// kernel objects as soon as no worker uses them; pinned maps stay in bpffs.
#ifndef KBP_ADDON_BPF_OBJECT_H
#define KBP_ADDON_BPF_OBJECT_H

#include <napi.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "object_loader.h"
#include "resource.h"

struct bpf_object;

namespace kbp {

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Define(Napi::Env env);
  // JS thread; takes ownership of `obj` (also on failure).
  static Napi::Value Create(Napi::Env env, const std::string& path, bpf_object* obj,
                            const std::vector<LoadedMap>& maps, const std::vector<LoadedProgram>& programs);

  explicit BpfObject(const Napi::CallbackInfo& info);

 private:
  Napi::Value GetPath(const Napi::CallbackInfo& info);
  Napi::Value Maps(const Napi::CallbackInfo& info);
  Napi::Value Map(const Napi::CallbackInfo& info);
  Napi::Value Programs(const Napi::CallbackInfo& info);
  Napi::Value Program(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  using Named = std::vector<std::pair<std::string, Napi::ObjectReference>>;
  static Napi::Value ToArray(Napi::Env env, const Named& named);
  static Napi::Value Find(const Napi::CallbackInfo& info, const Named& named, const char* what);

  std::shared_ptr<Resource> resource_;
  std::string path_;
  Named maps_;
  Named programs_;
};

}  // namespace kbp

#endif  // KBP_ADDON_BPF_OBJECT_H
