// BpfMap: one BPF map as JS sees it. Either a map of a loaded BpfObject
// (it shares the object's resource; close() only retires this wrapper) or a
// map opened from its pin (it owns the fd; close() releases it).
#ifndef KBP_ADDON_BPF_MAP_H
#define KBP_ADDON_BPF_MAP_H

#include <napi.h>

#include <memory>

#include "bpf_info.h"
#include "map_workers.h"
#include "resource.h"

namespace kbp {

class BpfMap : public Napi::ObjectWrap<BpfMap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // JS thread. Returns an empty value with an exception pending on failure.
  static Napi::Value Create(Napi::Env env, std::shared_ptr<Resource> resource, int fd,
                            const MapInfo& info, bool owns_resource);

  explicit BpfMap(const Napi::CallbackInfo& info);

 private:
  Napi::Value GetInfo(const Napi::CallbackInfo& info);
  Napi::Value GetValueBufferSize(const Napi::CallbackInfo& info);
  Napi::Value Lookup(const Napi::CallbackInfo& info);
  Napi::Value Update(const Napi::CallbackInfo& info);
  Napi::Value Delete(const Napi::CallbackInfo& info);
  Napi::Value UpdateBatch(const Napi::CallbackInfo& info);
  Napi::Value DeleteBatch(const Napi::CallbackInfo& info);
  Napi::Value LookupBatch(const Napi::CallbackInfo& info);
  Napi::Value LookupBatchInto(const Napi::CallbackInfo& info);
  Napi::Value NextKey(const Napi::CallbackInfo& info);
  Napi::Value Pin(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  // A MapRef with a lease, or false (and *rejected set to a rejected
  // promise) when this map or its object has been closed.
  bool Acquire(Napi::Env env, const char* syscall, MapRef* ref, Napi::Promise* rejected);

  std::shared_ptr<Resource> resource_;
  int fd_ = -1;
  MapInfo info_;
  size_t value_buffer_size_ = 0;
  bool owns_resource_ = false;
  bool closed_ = false;
};

}  // namespace kbp

#endif  // KBP_ADDON_BPF_MAP_H
