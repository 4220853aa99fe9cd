#include "bpf_info.h"

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace kbp {

int FetchMapInfo(int fd, MapInfo* out) {
  struct bpf_map_info info;
  memset(&info, 0, sizeof info);
  __u32 len = sizeof info;
  int err = bpf_obj_get_info_by_fd(fd, &info, &len);
  if (err != 0) return -err;
  out->id = info.id;
  out->name = info.name;
  out->type = info.type;
  out->key_size = info.key_size;
  out->value_size = info.value_size;
  out->max_entries = info.max_entries;
  out->flags = info.map_flags;
  return 0;
}

int FetchProgInfo(int fd, ProgInfo* out) {
  struct bpf_prog_info info;
  memset(&info, 0, sizeof info);
  __u32 len = sizeof info;
  int err = bpf_obj_get_info_by_fd(fd, &info, &len);
  if (err != 0) return -err;
  out->id = info.id;
  out->name = info.name;
  out->type = info.type;
  static const char kHex[] = "0123456789abcdef";
  out->tag.clear();
  for (unsigned char byte : info.tag) {
    out->tag += kHex[byte >> 4];
    out->tag += kHex[byte & 0xf];
  }
  return 0;
}

int CheckIsMap(int fd) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  FILE* file = fopen(path, "re");
  if (file == nullptr) return errno;
  char line[256];
  bool is_map = false;
  while (fgets(line, sizeof line, file) != nullptr) {
    if (strncmp(line, "map_type:", 9) == 0) {
      is_map = true;
      break;
    }
  }
  fclose(file);
  return is_map ? 0 : EINVAL;
}

bool IsPerCpuMapType(uint32_t type) {
  switch (type) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
      return true;
    default:
      return false;
  }
}

size_t ValueBufferSize(const MapInfo& info, int possible_cpus) {
  if (!IsPerCpuMapType(info.type)) return info.value_size;
  size_t slot = (static_cast<size_t>(info.value_size) + 7) & ~static_cast<size_t>(7);
  return slot * static_cast<size_t>(possible_cpus);
}

Napi::Object MapInfoToJs(Napi::Env env, const MapInfo& info) {
  Napi::Object obj = Napi::Object::New(env);
  obj.Set("id", Napi::Number::New(env, info.id));
  obj.Set("name", Napi::String::New(env, info.name));
  obj.Set("type", Napi::Number::New(env, info.type));
  obj.Set("keySize", Napi::Number::New(env, info.key_size));
  obj.Set("valueSize", Napi::Number::New(env, info.value_size));
  obj.Set("maxEntries", Napi::Number::New(env, info.max_entries));
  obj.Set("flags", Napi::Number::New(env, info.flags));
  return obj;
}

Napi::Object ProgInfoToJs(Napi::Env env, const ProgInfo& info) {
  Napi::Object obj = Napi::Object::New(env);
  obj.Set("id", Napi::Number::New(env, info.id));
  obj.Set("name", Napi::String::New(env, info.name));
  obj.Set("type", Napi::Number::New(env, info.type));
  obj.Set("tag", Napi::String::New(env, info.tag));
  return obj;
}

}  // namespace kbp
