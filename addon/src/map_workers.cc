#include "map_workers.h"

#include <bpf/bpf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "bpf_map.h"
#include "errors.h"

namespace kbp {

namespace {

// The kernel answers ENOTSUPP when a map type has no batch operation, and
// EINVAL for some types that reject them in their own checks.
bool NoBatchSupport(int err) { return err == EINVAL || err == kErrNotSupp || err == EOPNOTSUPP; }

bpf_map_batch_opts BatchOpts(uint64_t elem_flags) {
  bpf_map_batch_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  opts.elem_flags = elem_flags;
  return opts;
}

// Cursor tags (first byte of the opaque cursor).
constexpr uint8_t kCursorBatch = 'B';  // rest: the kernel's out_batch token
constexpr uint8_t kCursorKey = 'K';    // rest: the last key returned

// htab's token is a bucket index (u32), array maps use a key; one buffer
// large enough for either.
size_t BatchTokenSize(const MapInfo& info) { return std::max<size_t>(info.key_size, 8); }

// The largest page we grow to when a single hash bucket holds more entries
// than were asked for (the kernel answers ENOSPC instead of splitting it).
constexpr uint32_t kMaxGrownPage = 1u << 16;

Napi::Buffer<uint8_t> ToBuffer(Napi::Env env, const Bytes& bytes) {
  return Napi::Buffer<uint8_t>::Copy(env, bytes.data(), bytes.size());
}

std::string MapDetail(const MapInfo& info) { return "map " + info.name; }

}  // namespace

// ---- lookup ----

MapLookupWorker::MapLookupWorker(Napi::Env env, MapRef map, Bytes key)
    : PromiseWorker(env, "kbp:map_lookup"), map_(std::move(map)), key_(std::move(key)) {}

void MapLookupWorker::Work() {
  value_.resize(map_.value_buffer_size);
  int err = bpf_map_lookup_elem(map_.fd, key_.data(), value_.data());
  if (err == 0) {
    found_ = true;
    return;
  }
  if (-err == ENOENT) return;
  Fail(err, "bpf_map_lookup_elem", MapDetail(map_.info));
}

Napi::Value MapLookupWorker::Result(Napi::Env env) {
  if (!found_) return env.Null();
  return ToBuffer(env, value_);
}

// ---- update ----

MapUpdateWorker::MapUpdateWorker(Napi::Env env, MapRef map, Bytes key, Bytes value, uint64_t flags)
    : PromiseWorker(env, "kbp:map_update"),
      map_(std::move(map)),
      key_(std::move(key)),
      value_(std::move(value)),
      flags_(flags) {}

void MapUpdateWorker::Work() {
  int err = bpf_map_update_elem(map_.fd, key_.data(), value_.data(), flags_);
  if (err != 0) Fail(err, "bpf_map_update_elem", MapDetail(map_.info));
}

Napi::Value MapUpdateWorker::Result(Napi::Env env) { return env.Undefined(); }

// ---- delete ----

MapDeleteWorker::MapDeleteWorker(Napi::Env env, MapRef map, Bytes key)
    : PromiseWorker(env, "kbp:map_delete"), map_(std::move(map)), key_(std::move(key)) {}

void MapDeleteWorker::Work() {
  int err = bpf_map_delete_elem(map_.fd, key_.data());
  if (err == 0) {
    deleted_ = true;
    return;
  }
  if (-err == ENOENT) return;
  Fail(err, "bpf_map_delete_elem", MapDetail(map_.info));
}

Napi::Value MapDeleteWorker::Result(Napi::Env env) { return Napi::Boolean::New(env, deleted_); }

// ---- update batch ----

MapUpdateBatchWorker::MapUpdateBatchWorker(Napi::Env env, MapRef map, Bytes keys, Bytes values,
                                           uint32_t count, uint64_t flags)
    : PromiseWorker(env, "kbp:map_update_batch"),
      map_(std::move(map)),
      keys_(std::move(keys)),
      values_(std::move(values)),
      count_(count),
      flags_(flags) {}

void MapUpdateBatchWorker::Work() {
  if (count_ == 0) return;
  const size_t key_size = map_.info.key_size;
  const size_t value_size = map_.value_buffer_size;
  bpf_map_batch_opts opts = BatchOpts(flags_);
  uint32_t done = count_;
  int err = bpf_map_update_batch(map_.fd, keys_.data(), values_.data(), &done, &opts);
  if (err == 0) {
    written_ = count_;
    return;
  }
  err = -err;
  // The kernel writes back how many it processed; when it refused before
  // starting, the count comes back untouched.
  if (done >= count_) done = 0;
  if (!NoBatchSupport(err)) {
    Fail(err, "bpf_map_update_batch",
         MapDetail(map_.info) + ", " + std::to_string(done) + " of " + std::to_string(count_) +
             " written");
    return;
  }
  for (uint32_t i = done; i < count_; i++) {
    err = bpf_map_update_elem(map_.fd, keys_.data() + i * key_size, values_.data() + i * value_size,
                              flags_);
    if (err != 0) {
      Fail(err, "bpf_map_update_elem",
           MapDetail(map_.info) + ", " + std::to_string(i) + " of " + std::to_string(count_) +
               " written");
      return;
    }
  }
  written_ = count_;
}

Napi::Value MapUpdateBatchWorker::Result(Napi::Env env) { return Napi::Number::New(env, written_); }

// ---- delete batch ----

MapDeleteBatchWorker::MapDeleteBatchWorker(Napi::Env env, MapRef map, Bytes keys, uint32_t count)
    : PromiseWorker(env, "kbp:map_delete_batch"),
      map_(std::move(map)),
      keys_(std::move(keys)),
      count_(count) {}

void MapDeleteBatchWorker::Work() {
  const size_t key_size = map_.info.key_size;
  bpf_map_batch_opts opts = BatchOpts(0);
  uint32_t next = 0;
  while (next < count_) {
    uint32_t left = count_ - next;
    uint32_t done = left;
    int err = bpf_map_delete_batch(map_.fd, keys_.data() + next * key_size, &done, &opts);
    if (err == 0) {
      deleted_ += left;
      return;
    }
    err = -err;
    if (done >= left) done = 0;  // untouched: refused before starting
    deleted_ += done;
    next += done;
    if (err == ENOENT) {
      next++;  // the key at `next` is absent: skip it and go on
      continue;
    }
    if (NoBatchSupport(err)) {
      DeleteOneByOne(next);
      return;
    }
    Fail(err, "bpf_map_delete_batch", MapDetail(map_.info));
    return;
  }
}

bool MapDeleteBatchWorker::DeleteOneByOne(uint32_t from) {
  const size_t key_size = map_.info.key_size;
  for (uint32_t i = from; i < count_; i++) {
    int err = bpf_map_delete_elem(map_.fd, keys_.data() + i * key_size);
    if (err == 0) {
      deleted_++;
    } else if (-err != ENOENT) {
      Fail(err, "bpf_map_delete_elem", MapDetail(map_.info));
      return false;
    }
  }
  return true;
}

Napi::Value MapDeleteBatchWorker::Result(Napi::Env env) { return Napi::Number::New(env, deleted_); }

// ---- lookup batch ----

size_t LookupBatchCursorSize(const MapInfo& info) {
  return 1 + std::max<size_t>(BatchTokenSize(info), info.key_size);
}

MapLookupBatchWorker::MapLookupBatchWorker(Napi::Env env, MapRef map, Bytes cursor, bool has_cursor,
                                           uint32_t max_count)
    : PromiseWorker(env, "kbp:map_lookup_batch"),
      map_(std::move(map)),
      cursor_(std::move(cursor)),
      has_cursor_(has_cursor),
      max_count_(max_count) {}

MapLookupBatchWorker::MapLookupBatchWorker(Napi::Env env, MapRef map, Bytes cursor, bool has_cursor,
                                           uint32_t max_count, BatchInto into)
    : MapLookupBatchWorker(env, std::move(map), std::move(cursor), has_cursor, max_count) {
  into_mode_ = true;
  into_ = std::move(into);
  keys_at_ = into_.keys_at;
  values_at_ = into_.values_at;
}

bool MapLookupBatchWorker::Reserve(uint32_t entries) {
  if (into_mode_) return entries <= into_.capacity;
  keys_.resize(static_cast<size_t>(entries) * map_.info.key_size);
  values_.resize(static_cast<size_t>(entries) * map_.value_buffer_size);
  keys_at_ = keys_.data();
  values_at_ = values_.data();
  return true;
}

uint32_t MapLookupBatchWorker::GrowLimit() const {
  return into_mode_ ? std::min(into_.capacity, kMaxGrownPage) : kMaxGrownPage;
}

void MapLookupBatchWorker::Work() {
  if (!has_cursor_ || (!cursor_.empty() && cursor_[0] == kCursorBatch)) {
    WorkBatch();
  } else if (!cursor_.empty() && cursor_[0] == kCursorKey) {
    WorkByKey();
  } else {
    Fail(EINVAL, "bpf_map_lookup_batch", "cursor was not returned by lookupBatch");
  }
}

void MapLookupBatchWorker::WorkBatch() {
  const size_t token_size = BatchTokenSize(map_.info);
  if (has_cursor_ && cursor_.size() != 1 + token_size) {
    Fail(EINVAL, "bpf_map_lookup_batch", "cursor does not belong to " + MapDetail(map_.info));
    return;
  }
  Bytes in(token_size, 0);
  if (has_cursor_) std::copy(cursor_.begin() + 1, cursor_.end(), in.begin());
  Bytes out(token_size, 0);
  uint32_t want = max_count_;
  for (;;) {
    if (!Reserve(want)) {
      Fail(EINVAL, "bpf_map_lookup_batch", "maxCount is more than the buffers hold");
      return;
    }
    uint32_t got = want;
    int err = bpf_map_lookup_batch(map_.fd, has_cursor_ ? in.data() : nullptr, out.data(), keys_at_,
                                   values_at_, &got, nullptr);
    if (err == 0) {
      count_ = got > want ? want : got;
      break;
    }
    err = -err;
    if (err == ENOENT) {  // the walk reached the end; `got` entries were still read
      count_ = got > want ? 0 : got;
      at_end_ = true;
      break;
    }
    // One hash bucket holds more entries than fit in the page: the kernel
    // never splits a bucket, so the page has to grow (the caller's buffers
    // only as far as they reach: ENOSPC tells it to bring bigger ones).
    if (err == ENOSPC && want < GrowLimit()) {
      want = std::min(want * 2, GrowLimit());
      continue;
    }
    if (NoBatchSupport(err) && !has_cursor_) {
      WorkByKey();
      return;
    }
    Fail(err, "bpf_map_lookup_batch", MapDetail(map_.info));
    return;
  }
  if (!into_mode_) Reserve(count_);
  if (!at_end_) {
    next_.reserve(1 + token_size);
    next_.push_back(kCursorBatch);
    next_.insert(next_.end(), out.begin(), out.end());
  }
}

void MapLookupBatchWorker::WorkByKey() {
  const size_t key_size = map_.info.key_size;
  const size_t value_size = map_.value_buffer_size;
  Bytes prev;
  if (has_cursor_) {
    if (cursor_.size() != 1 + key_size) {
      Fail(EINVAL, "bpf_map_get_next_key", "cursor does not belong to " + MapDetail(map_.info));
      return;
    }
    prev.assign(cursor_.begin() + 1, cursor_.end());
  }
  if (!Reserve(max_count_)) {
    Fail(EINVAL, "bpf_map_get_next_key", "maxCount is more than the buffers hold");
    return;
  }
  Bytes key(key_size);
  while (count_ < max_count_) {
    int err = bpf_map_get_next_key(map_.fd, prev.empty() ? nullptr : prev.data(), key.data());
    if (err != 0) {
      if (-err == ENOENT) {
        at_end_ = true;
        break;
      }
      Fail(err, "bpf_map_get_next_key", MapDetail(map_.info));
      return;
    }
    prev = key;
    err = bpf_map_lookup_elem(map_.fd, key.data(), values_at_ + count_ * value_size);
    if (err != 0) {
      if (-err == ENOENT) continue;  // deleted since get_next_key returned it
      Fail(err, "bpf_map_lookup_elem", MapDetail(map_.info));
      return;
    }
    std::copy(key.begin(), key.end(), keys_at_ + count_ * key_size);
    count_++;
  }
  if (!into_mode_) Reserve(count_);
  if (!at_end_) {
    next_.push_back(kCursorKey);
    next_.insert(next_.end(), prev.begin(), prev.end());
  }
}

Napi::Value MapLookupBatchWorker::Result(Napi::Env env) {
  Napi::Object page = Napi::Object::New(env);
  if (into_mode_) {
    // The caller's next Buffer was checked to hold LookupBatchCursorSize.
    if (!at_end_) std::copy(next_.begin(), next_.end(), into_.next.Value().Data());
    page.Set("count", Napi::Number::New(env, count_));
    page.Set("next", Napi::Number::New(env, at_end_ ? 0 : static_cast<double>(next_.size())));
    return page;
  }
  page.Set("keys", ToBuffer(env, keys_));
  page.Set("values", ToBuffer(env, values_));
  page.Set("count", Napi::Number::New(env, count_));
  if (at_end_) {
    page.Set("next", env.Null());
  } else {
    page.Set("next", ToBuffer(env, next_));
  }
  return page;
}

// ---- next key ----

MapNextKeyWorker::MapNextKeyWorker(Napi::Env env, MapRef map, Bytes key, bool has_key)
    : PromiseWorker(env, "kbp:map_next_key"),
      map_(std::move(map)),
      key_(std::move(key)),
      has_key_(has_key) {}

void MapNextKeyWorker::Work() {
  next_.resize(map_.info.key_size);
  int err = bpf_map_get_next_key(map_.fd, has_key_ ? key_.data() : nullptr, next_.data());
  if (err == 0) {
    found_ = true;
    return;
  }
  if (-err == ENOENT) return;
  Fail(err, "bpf_map_get_next_key", MapDetail(map_.info));
}

Napi::Value MapNextKeyWorker::Result(Napi::Env env) {
  if (!found_) return env.Null();
  return ToBuffer(env, next_);
}

// ---- open pinned ----

OpenPinnedMapWorker::OpenPinnedMapWorker(Napi::Env env, std::string path)
    : PromiseWorker(env, "kbp:open_pinned_map"), path_(std::move(path)) {}

OpenPinnedMapWorker::~OpenPinnedMapWorker() {
  if (fd_ >= 0) close(fd_);
}

void OpenPinnedMapWorker::Work() {
  int fd = bpf_obj_get(path_.c_str());
  if (fd < 0) {
    Fail(errno, "bpf_obj_get", path_);
    return;
  }
  fd_ = fd;
  int err = CheckIsMap(fd_);
  if (err != 0) {
    Fail(err, "bpf_obj_get", path_ + " is not a map");
    return;
  }
  err = FetchMapInfo(fd_, &info_);
  if (err != 0) Fail(err, "bpf_obj_get_info_by_fd", path_);
}

Napi::Value OpenPinnedMapWorker::Result(Napi::Env env) {
  int fd = fd_;
  fd_ = -1;  // the map owns it from here on, even if creating the wrapper fails
  auto resource = std::make_shared<Resource>([fd] { close(fd); });
  return BpfMap::Create(env, std::move(resource), fd, info_, true);
}

}  // namespace kbp
