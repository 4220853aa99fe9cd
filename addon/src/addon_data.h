// Per-environment state: the constructors of the wrapper classes, so C++ can
// create instances (the classes are not exported; JS only receives objects).
#ifndef KBP_ADDON_ADDON_DATA_H
#define KBP_ADDON_ADDON_DATA_H

#include <napi.h>

namespace kbp {

struct AddonData {
  Napi::FunctionReference bpf_object;
  Napi::FunctionReference bpf_map;
  Napi::FunctionReference bpf_program;
  Napi::FunctionReference link_watcher;
  int possible_cpus = 0;
};

inline AddonData* GetAddonData(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

}  // namespace kbp

#endif  // KBP_ADDON_ADDON_DATA_H
