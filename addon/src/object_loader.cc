#include "object_loader.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>

#include "bpf_object.h"
#include "libbpf_log.h"

namespace kbp {

namespace {

// Enough of the verifier log to see the failing instruction and the
// verifier's reason, without flooding a log line.
constexpr size_t kLogTailLines = 40;
constexpr size_t kLogTailBytes = 6000;

}  // namespace

ObjectLoadWorker::ObjectLoadWorker(Napi::Env env, std::string path, std::string pin_root,
                                   std::vector<std::pair<std::string, uint32_t>> max_entries)
    : PromiseWorker(env, "kbp:object_load"),
      path_(std::move(path)),
      pin_root_(std::move(pin_root)),
      max_entries_(std::move(max_entries)) {}

ObjectLoadWorker::~ObjectLoadWorker() {
  if (obj_ != nullptr) bpf_object__close(obj_);
}

void ObjectLoadWorker::Work() {
  LibbpfLogCapture log;
  bpf_object_open_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  opts.pin_root_path = pin_root_.empty() ? nullptr : pin_root_.c_str();
  obj_ = bpf_object__open_file(path_.c_str(), &opts);
  if (obj_ == nullptr) {
    Fail(errno, "bpf_object__open_file", path_);
    return;
  }

  for (const auto& [name, entries] : max_entries_) {
    bpf_map* map = bpf_object__find_map_by_name(obj_, name.c_str());
    if (map == nullptr) {
      Fail(ENOENT, "bpf_object__find_map_by_name", "no map " + name + " in " + path_);
      return;
    }
    int err = bpf_map__set_max_entries(map, entries);
    if (err != 0) {
      Fail(err, "bpf_map__set_max_entries", name);
      return;
    }
  }

  int err = bpf_object__load(obj_);
  if (err != 0) {
    std::string tail = log.Tail(kLogTailLines, kLogTailBytes);
    Fail(err, "bpf_object__load", path_ + (tail.empty() ? "" : "\n" + tail));
    return;
  }

  bpf_map* map;
  bpf_object__for_each_map(map, obj_) {
    int fd = bpf_map__fd(map);
    if (fd < 0) continue;  // not created (autocreate off)
    LoadedMap loaded{bpf_map__name(map), fd, {}};
    err = FetchMapInfo(fd, &loaded.info);
    if (err != 0) {
      Fail(err, "bpf_obj_get_info_by_fd", loaded.name);
      return;
    }
    maps_.push_back(std::move(loaded));
  }
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj_) {
    int fd = bpf_program__fd(prog);
    if (fd < 0) continue;  // not loaded (autoload off)
    LoadedProgram loaded{bpf_program__name(prog), fd, {}};
    err = FetchProgInfo(fd, &loaded.info);
    if (err != 0) {
      Fail(err, "bpf_obj_get_info_by_fd", loaded.name);
      return;
    }
    programs_.push_back(std::move(loaded));
  }
}

Napi::Value ObjectLoadWorker::Result(Napi::Env env) {
  bpf_object* obj = obj_;
  obj_ = nullptr;  // owned by the BpfObject's resource from here on
  return BpfObject::Create(env, path_, obj, maps_, programs_);
}

}  // namespace kbp
