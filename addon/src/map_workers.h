// The blocking map operations, one named worker each. Every worker holds a
// lease on the map's resource, so the fd stays open until it is done, and
// owns copies of the key/value bytes it was given (the one exception, a
// batch lookup into the caller's Buffers, is BatchInto below).
#ifndef KBP_ADDON_MAP_WORKERS_H
#define KBP_ADDON_MAP_WORKERS_H

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bpf_info.h"
#include "promise_worker.h"
#include "resource.h"

namespace kbp {

using Bytes = std::vector<uint8_t>;

// What a worker needs to know about the map it works on.
struct MapRef {
  Resource::Lease lease;
  int fd = -1;
  MapInfo info;
  size_t value_buffer_size = 0;  // per-CPU maps: all CPUs
};

class MapLookupWorker : public PromiseWorker {
 public:
  MapLookupWorker(Napi::Env env, MapRef map, Bytes key);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  MapRef map_;
  Bytes key_;
  Bytes value_;
  bool found_ = false;
};

class MapUpdateWorker : public PromiseWorker {
 public:
  MapUpdateWorker(Napi::Env env, MapRef map, Bytes key, Bytes value, uint64_t flags);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  MapRef map_;
  Bytes key_;
  Bytes value_;
  uint64_t flags_;
};

class MapDeleteWorker : public PromiseWorker {
 public:
  MapDeleteWorker(Napi::Env env, MapRef map, Bytes key);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  MapRef map_;
  Bytes key_;
  bool deleted_ = false;
};

// bpf_map_update_batch, or one update per element for map types the kernel
// has no batch operation for.
class MapUpdateBatchWorker : public PromiseWorker {
 public:
  MapUpdateBatchWorker(Napi::Env env, MapRef map, Bytes keys, Bytes values, uint32_t count,
                       uint64_t flags);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  MapRef map_;
  Bytes keys_;
  Bytes values_;
  uint32_t count_;
  uint64_t flags_;
  uint32_t written_ = 0;
};

// bpf_map_delete_batch; absent keys are skipped (the kernel stops a batch at
// the first absent key, so the batch resumes after it).
class MapDeleteBatchWorker : public PromiseWorker {
 public:
  MapDeleteBatchWorker(Napi::Env env, MapRef map, Bytes keys, uint32_t count);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  bool DeleteOneByOne(uint32_t from);
  MapRef map_;
  Bytes keys_;
  uint32_t count_;
  uint32_t deleted_ = 0;
};

// The caller's Buffers a page of lookupBatchInto(cursor, maxCount, into) goes
// to. The worker thread writes keys and values in place, so a dump reuses
// the same memory for every page instead of copying each page into new
// Buffers; the references keep the Buffers alive until the promise settles,
// and JS must not touch them meanwhile.
struct BatchInto {
  Napi::Reference<Napi::Buffer<uint8_t>> keys;
  Napi::Reference<Napi::Buffer<uint8_t>> values;
  Napi::Reference<Napi::Buffer<uint8_t>> next;
  uint8_t* keys_at = nullptr;
  uint8_t* values_at = nullptr;
  uint32_t capacity = 0;  // entries both hold
};

// Bytes of the longest cursor lookupBatch hands out.
size_t LookupBatchCursorSize(const MapInfo& info);

// One page of bpf_map_lookup_batch, or of get_next_key + lookup for map
// types without batch lookup. The cursor is opaque to JS: its first byte
// says which of the two walks produced it. The page goes into Buffers the
// worker allocates, or into the caller's (BatchInto).
class MapLookupBatchWorker : public PromiseWorker {
 public:
  MapLookupBatchWorker(Napi::Env env, MapRef map, Bytes cursor, bool has_cursor, uint32_t max_count);
  MapLookupBatchWorker(Napi::Env env, MapRef map, Bytes cursor, bool has_cursor, uint32_t max_count,
                       BatchInto into);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  void WorkBatch();
  void WorkByKey();
  // Room for `entries` entries at keys_at_/values_at_: the worker's own
  // buffers grow, the caller's hold what they hold.
  bool Reserve(uint32_t entries);
  // The largest page a bucket that does not fit may grow the batch to.
  uint32_t GrowLimit() const;
  MapRef map_;
  Bytes cursor_;
  bool has_cursor_;
  uint32_t max_count_;
  bool into_mode_ = false;
  BatchInto into_;
  Bytes keys_;
  Bytes values_;
  uint8_t* keys_at_ = nullptr;
  uint8_t* values_at_ = nullptr;
  uint32_t count_ = 0;
  Bytes next_;
  bool at_end_ = false;
};

class MapNextKeyWorker : public PromiseWorker {
 public:
  MapNextKeyWorker(Napi::Env env, MapRef map, Bytes key, bool has_key);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  MapRef map_;
  Bytes key_;
  bool has_key_;
  Bytes next_;
  bool found_ = false;
};

// bpf_obj_get on a bpffs path; resolves with a BpfMap that owns the fd.
class OpenPinnedMapWorker : public PromiseWorker {
 public:
  OpenPinnedMapWorker(Napi::Env env, std::string path);
  ~OpenPinnedMapWorker() override;

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  std::string path_;
  int fd_ = -1;
  MapInfo info_;
};

}  // namespace kbp

#endif  // KBP_ADDON_MAP_WORKERS_H
