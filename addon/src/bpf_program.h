// BpfProgram: one program of a loaded BpfObject. It shares the object's
// resource: after the object is closed its fd is gone and its calls reject
// with EBADF.
#ifndef KBP_ADDON_BPF_PROGRAM_H
#define KBP_ADDON_BPF_PROGRAM_H

#include <napi.h>

#include <memory>
#include <string>

#include "bpf_info.h"
#include "resource.h"

namespace kbp {

class BpfProgram : public Napi::ObjectWrap<BpfProgram> {
 public:
  static Napi::Function Define(Napi::Env env);
  // JS thread. Returns an empty value with an exception pending on failure.
  static Napi::Value Create(Napi::Env env, std::shared_ptr<Resource> resource, int fd,
                            std::string name, const ProgInfo& info);
  // The wrapped program of a JS value, or null when it is not a BpfProgram.
  static BpfProgram* FromValue(Napi::Env env, const Napi::Value& value);

  explicit BpfProgram(const Napi::CallbackInfo& info);

  // A lease and the fd, or an empty lease when the object is closed.
  Resource::Lease Acquire(int* fd) const;
  const ProgInfo& info() const { return info_; }

 private:
  Napi::Value GetName(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value GetInfo(const Napi::CallbackInfo& info);
  Napi::Value TestRun(const Napi::CallbackInfo& info);
  Napi::Value TestRunEach(const Napi::CallbackInfo& info);
  Napi::Value Pin(const Napi::CallbackInfo& info);

  std::shared_ptr<Resource> resource_;
  int fd_ = -1;
  std::string name_;
  ProgInfo info_;
};

}  // namespace kbp

#endif  // KBP_ADDON_BPF_PROGRAM_H
