#include "bpf_map.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>

#include "addon_data.h"
#include "errors.h"
#include "pin_worker.h"

namespace kbp {

namespace {

// Copies the first `size` bytes of a Buffer argument; false when `value` is
// not a Buffer or is shorter.
bool CopyBytes(const Napi::Value& value, size_t size, Bytes* out) {
  if (!value.IsBuffer()) return false;
  auto buffer = value.As<Napi::Buffer<uint8_t>>();
  if (buffer.Length() < size) return false;
  out->assign(buffer.Data(), buffer.Data() + size);
  return true;
}

size_t BufferLength(const Napi::Value& value) {
  return value.IsBuffer() ? value.As<Napi::Buffer<uint8_t>>().Length() : 0;
}

// Optional BPF_ANY/BPF_NOEXIST/BPF_EXIST/BPF_F_LOCK argument.
bool ReadFlags(const Napi::Value& value, uint64_t* flags) {
  *flags = 0;
  if (value.IsUndefined()) return true;
  if (!value.IsNumber()) return false;
  int64_t n = value.As<Napi::Number>().Int64Value();
  if (n < 0) return false;
  *flags = static_cast<uint64_t>(n);
  return true;
}

bool ReadCount(const Napi::Value& value, uint32_t* count) {
  if (!value.IsNumber()) return false;
  double n = value.As<Napi::Number>().DoubleValue();
  if (!(n >= 0) || n > UINT32_MAX || n != static_cast<double>(static_cast<uint32_t>(n))) return false;
  *count = static_cast<uint32_t>(n);
  return true;
}

std::string SizeMismatch(const char* what, size_t got, const MapInfo& info, size_t want) {
  return std::string(what) + " is " + std::to_string(got) + " bytes; map " + info.name +
         " expects " + std::to_string(want);
}

// lookupBatch's (cursor, maxCount). The cursor is copied: the call may pass
// a view of the Buffer its next cursor is written to.
bool ReadBatchArgs(const Napi::CallbackInfo& info, Bytes* cursor, bool* has_cursor,
                   uint32_t* max_count, std::string* why) {
  *has_cursor = !info[0].IsNull() && !info[0].IsUndefined();
  if (*has_cursor && !CopyBytes(info[0], BufferLength(info[0]), cursor)) {
    *why = "cursor must be a Buffer or null";
    return false;
  }
  if (!ReadCount(info[1], max_count) || *max_count == 0) {
    *why = "maxCount must be a positive integer";
    return false;
  }
  return true;
}

// The `into` argument of lookupBatchInto: {keys, values, next} Buffers, held by
// references for the worker. False (and *why set) when one is missing or
// too small for the map.
bool ReadBatchInto(const Napi::Value& value, const MapInfo& info, size_t value_buffer_size,
                   uint32_t max_count, BatchInto* into, std::string* why) {
  if (!value.IsObject()) {
    *why = "into must be an object {keys, values, next}";
    return false;
  }
  Napi::Object o = value.As<Napi::Object>();
  Napi::Value keys = o.Get("keys");
  Napi::Value values = o.Get("values");
  Napi::Value next = o.Get("next");
  if (!keys.IsBuffer() || !values.IsBuffer() || !next.IsBuffer()) {
    *why = "into.keys, into.values and into.next must be Buffers";
    return false;
  }
  auto k = keys.As<Napi::Buffer<uint8_t>>();
  auto v = values.As<Napi::Buffer<uint8_t>>();
  auto n = next.As<Napi::Buffer<uint8_t>>();
  size_t capacity = std::min(k.Length() / info.key_size, v.Length() / value_buffer_size);
  if (capacity < max_count) {
    *why = "into holds " + std::to_string(capacity) + " entries of map " + info.name + ", maxCount is " +
           std::to_string(max_count);
    return false;
  }
  if (n.Length() < LookupBatchCursorSize(info)) {
    *why = SizeMismatch("into.next", n.Length(), info, LookupBatchCursorSize(info));
    return false;
  }
  into->keys_at = k.Data();
  into->values_at = v.Data();
  into->capacity = static_cast<uint32_t>(std::min<size_t>(capacity, UINT32_MAX));
  into->keys = Napi::Persistent(k);
  into->values = Napi::Persistent(v);
  into->next = Napi::Persistent(n);
  return true;
}

}  // namespace

Napi::Function BpfMap::Define(Napi::Env env) {
  return DefineClass(env, "BpfMap",
                     {
                         InstanceAccessor<&BpfMap::GetInfo>("info"),
                         InstanceAccessor<&BpfMap::GetValueBufferSize>("valueBufferSize"),
                         InstanceMethod<&BpfMap::Lookup>("lookup"),
                         InstanceMethod<&BpfMap::Update>("update"),
                         InstanceMethod<&BpfMap::Delete>("delete"),
                         InstanceMethod<&BpfMap::UpdateBatch>("updateBatch"),
                         InstanceMethod<&BpfMap::DeleteBatch>("deleteBatch"),
                         InstanceMethod<&BpfMap::LookupBatch>("lookupBatch"),
                         InstanceMethod<&BpfMap::LookupBatchInto>("lookupBatchInto"),
                         InstanceMethod<&BpfMap::NextKey>("nextKey"),
                         InstanceMethod<&BpfMap::Pin>("pin"),
                         InstanceMethod<&BpfMap::Close>("close"),
                     });
}

Napi::Value BpfMap::Create(Napi::Env env, std::shared_ptr<Resource> resource, int fd,
                           const MapInfo& info, bool owns_resource) {
  AddonData* data = GetAddonData(env);
  Napi::Object obj = data->bpf_map.New({});
  if (env.IsExceptionPending()) return Napi::Value();
  BpfMap* map = BpfMap::Unwrap(obj);
  map->resource_ = std::move(resource);
  map->fd_ = fd;
  map->info_ = info;
  map->value_buffer_size_ = ValueBufferSize(info, data->possible_cpus);
  map->owns_resource_ = owns_resource;
  return obj;
}

BpfMap::BpfMap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfMap>(info) {}

bool BpfMap::Acquire(Napi::Env env, const char* syscall, MapRef* ref, Napi::Promise* rejected) {
  Resource::Lease lease = closed_ ? Resource::Lease() : Resource::Acquire(resource_);
  if (!lease) {
    *rejected = RejectedErrno(env, EBADF, syscall, "map " + info_.name + " is closed");
    return false;
  }
  ref->lease = std::move(lease);
  ref->fd = fd_;
  ref->info = info_;
  ref->value_buffer_size = value_buffer_size_;
  return true;
}

Napi::Value BpfMap::GetInfo(const Napi::CallbackInfo& info) { return MapInfoToJs(info.Env(), info_); }

Napi::Value BpfMap::GetValueBufferSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(value_buffer_size_));
}

Napi::Value BpfMap::Lookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_map_lookup_elem";
  Bytes key;
  if (BufferLength(info[0]) != info_.key_size || !CopyBytes(info[0], info_.key_size, &key)) {
    return RejectedErrno(env, EINVAL, call, SizeMismatch("key", BufferLength(info[0]), info_, info_.key_size));
  }
  MapRef ref;
  Napi::Promise rejected;
  if (!Acquire(env, call, &ref, &rejected)) return rejected;
  return (new MapLookupWorker(env, std::move(ref), std::move(key)))->Start();
}

Napi::Value BpfMap::Update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_map_update_elem";
  Bytes key;
  Bytes value;
  uint64_t flags;
  if (BufferLength(info[0]) != info_.key_size || !CopyBytes(info[0], info_.key_size, &key)) {
    return RejectedErrno(env, EINVAL, call, SizeMismatch("key", BufferLength(info[0]), info_, info_.key_size));
  }
  if (BufferLength(info[1]) != value_buffer_size_ || !CopyBytes(info[1], value_buffer_size_, &value)) {
    return RejectedErrno(env, EINVAL, call,
                         SizeMismatch("value", BufferLength(info[1]), info_, value_buffer_size_));
  }
  if (!ReadFlags(info[2], &flags)) return RejectedErrno(env, EINVAL, call, "flags must be a non-negative number");
  MapRef ref;
  Napi::Promise rejected;
  if (!Acquire(env, call, &ref, &rejected)) return rejected;
  return (new MapUpdateWorker(env, std::move(ref), std::move(key), std::move(value), flags))->Start();
}

Napi::Value BpfMap::Delete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_map_delete_elem";
  Bytes key;
  if (BufferLength(info[0]) != info_.key_size || !CopyBytes(info[0], info_.key_size, &key)) {
    return RejectedErrno(env, EINVAL, call, SizeMismatch("key", BufferLength(info[0]), info_, info_.key_size));
  }
  MapRef ref;
  Napi::Promise rejected;
  if (!Acquire(env, call, &ref, &rejected)) return rejected;
  return (new MapDeleteWorker(env, std::move(ref), std::move(key)))->Start();
}

Napi::Value BpfMap::UpdateBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_map_update_batch";
  uint32_t count;
  uint64_t flags;
  if (!ReadCount(info[2], &count)) return RejectedErrno(env, EINVAL, call, "count must be a non-negative integer");
  if (!ReadFlags(info[3], &flags)) return RejectedErrno(env, EINVAL, call, "flags must be a non-negative number");
  Bytes keys;
  Bytes values;
  size_t keys_size = static_cast<size_t>(count) * info_.key_size;
  size_t values_size = static_cast<size_t>(count) * value_buffer_size_;
  if (!CopyBytes(info[0], keys_size, &keys)) {
    return RejectedErrno(env, EINVAL, call, SizeMismatch("keys", BufferLength(info[0]), info_, keys_size));
  }
  if (!CopyBytes(info[1], values_size, &values)) {
    return RejectedErrno(env, EINVAL, call, SizeMismatch("values", BufferLength(info[1]), info_, values_size));
  }
  MapRef ref;
  Napi::Promise rejected;
  if (!Acquire(env, call, &ref, &rejected)) return rejected;
  return (new MapUpdateBatchWorker(env, std::move(ref), std::move(keys), std::move(values), count, flags))
      ->Start();
}

Napi::Value BpfMap::DeleteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_map_delete_batch";
  uint32_t count;
  if (!ReadCount(info[1], &count)) return RejectedErrno(env, EINVAL, call, "count must be a non-negative integer");
  Bytes keys;
  size_t keys_size = static_cast<size_t>(count) * info_.key_size;
  if (!CopyBytes(info[0], keys_size, &keys)) {
    return RejectedErrno(env, EINVAL, call, SizeMismatch("keys", BufferLength(info[0]), info_, keys_size));
  }
  MapRef ref;
  Napi::Promise rejected;
  if (!Acquire(env, call, &ref, &rejected)) return rejected;
  return (new MapDeleteBatchWorker(env, std::move(ref), std::move(keys), count))->Start();
}

Napi::Value BpfMap::LookupBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_map_lookup_batch";
  Bytes cursor;
  bool has_cursor;
  uint32_t max_count;
  std::string why;
  if (!ReadBatchArgs(info, &cursor, &has_cursor, &max_count, &why)) return RejectedErrno(env, EINVAL, call, why);
  MapRef ref;
  Napi::Promise rejected;
  if (!Acquire(env, call, &ref, &rejected)) return rejected;
  return (new MapLookupBatchWorker(env, std::move(ref), std::move(cursor), has_cursor, max_count))->Start();
}

Napi::Value BpfMap::LookupBatchInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_map_lookup_batch";
  Bytes cursor;
  bool has_cursor;
  uint32_t max_count;
  BatchInto into;
  std::string why;
  if (!ReadBatchArgs(info, &cursor, &has_cursor, &max_count, &why) ||
      !ReadBatchInto(info[2], info_, value_buffer_size_, max_count, &into, &why)) {
    return RejectedErrno(env, EINVAL, call, why);
  }
  MapRef ref;
  Napi::Promise rejected;
  if (!Acquire(env, call, &ref, &rejected)) return rejected;
  return (new MapLookupBatchWorker(env, std::move(ref), std::move(cursor), has_cursor, max_count,
                                   std::move(into)))
      ->Start();
}

Napi::Value BpfMap::NextKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_map_get_next_key";
  Bytes key;
  bool has_key = !info[0].IsNull() && !info[0].IsUndefined();
  if (has_key && (BufferLength(info[0]) != info_.key_size || !CopyBytes(info[0], info_.key_size, &key))) {
    return RejectedErrno(env, EINVAL, call, SizeMismatch("key", BufferLength(info[0]), info_, info_.key_size));
  }
  MapRef ref;
  Napi::Promise rejected;
  if (!Acquire(env, call, &ref, &rejected)) return rejected;
  return (new MapNextKeyWorker(env, std::move(ref), std::move(key), has_key))->Start();
}

Napi::Value BpfMap::Pin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_obj_pin";
  if (!info[0].IsString()) return RejectedErrno(env, EINVAL, call, "path must be a string");
  MapRef ref;
  Napi::Promise rejected;
  if (!Acquire(env, call, &ref, &rejected)) return rejected;
  return (new PinWorker(env, std::move(ref.lease), ref.fd, info[0].As<Napi::String>().Utf8Value()))->Start();
}

Napi::Value BpfMap::Close(const Napi::CallbackInfo& info) {
  if (!closed_) {
    closed_ = true;
    if (owns_resource_ && resource_) resource_->Close();
  }
  return info.Env().Undefined();
}

}  // namespace kbp
