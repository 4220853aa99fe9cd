// What the kernel says about a map or a program (BPF_OBJ_GET_INFO_BY_FD),
// copied into plain structs on the worker thread and turned into JS objects
// on the JS thread.
#ifndef KBP_ADDON_BPF_INFO_H
#define KBP_ADDON_BPF_INFO_H

#include <napi.h>

#include <cstdint>
#include <string>

namespace kbp {

struct MapInfo {
  uint32_t id = 0;
  std::string name;
  uint32_t type = 0;
  uint32_t key_size = 0;
  uint32_t value_size = 0;
  uint32_t max_entries = 0;
  uint32_t flags = 0;
};

struct ProgInfo {
  uint32_t id = 0;
  std::string name;
  uint32_t type = 0;
  std::string tag;  // hex
};

// Return 0 or a positive errno.
int FetchMapInfo(int fd, MapInfo* out);
int FetchProgInfo(int fd, ProgInfo* out);

// 0 when `fd` is a BPF map, EINVAL when it is another BPF object (a pinned
// program, say), or the errno of reading /proc/self/fdinfo.
int CheckIsMap(int fd);

bool IsPerCpuMapType(uint32_t type);

// Bytes of one value as user space reads and writes it: per-CPU maps hold
// one 8-byte aligned slot per possible CPU.
size_t ValueBufferSize(const MapInfo& info, int possible_cpus);

Napi::Object MapInfoToJs(Napi::Env env, const MapInfo& info);
Napi::Object ProgInfoToJs(Napi::Env env, const ProgInfo& info);

}  // namespace kbp

#endif  // KBP_ADDON_BPF_INFO_H
