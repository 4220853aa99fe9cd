// layout() and constants(): the shared ABI header as the C++ compiler sees
// it, exported so the TypeScript codecs are tested against the same figures
// the kernel side uses. This is the one table to extend when abi.h grows.
#ifndef KBP_ADDON_ABI_TABLE_H
#define KBP_ADDON_ABI_TABLE_H

#include <napi.h>

namespace kbp {

Napi::Value Layout(const Napi::CallbackInfo& info);
Napi::Value Constants(const Napi::CallbackInfo& info);

}  // namespace kbp

#endif  // KBP_ADDON_ABI_TABLE_H
