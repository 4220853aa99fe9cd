#include "xdp_workers.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "bpf_info.h"

namespace kbp {

namespace {

// Fills `out` with the device's native-mode XDP program. Returns 0 or a
// negative errno, naming the failed call.
int QueryAttached(int ifindex, AttachedXdp* out, const char** call) {
  *call = "bpf_xdp_query_id";
  int err = bpf_xdp_query_id(ifindex, XDP_FLAGS_DRV_MODE, &out->id);
  if (err != 0 || out->id == 0) return err;
  *call = "bpf_prog_get_fd_by_id";
  out->fd = bpf_prog_get_fd_by_id(out->id);
  if (out->fd < 0) return -errno;
  ProgInfo info;
  *call = "bpf_prog_get_info_by_fd";
  err = FetchProgInfo(out->fd, &info);
  if (err != 0) return -err;
  out->name = info.name;
  return 0;
}

// Filled in place: libbpf refuses opts whose padding is not zero, and a
// struct returned by value need not keep its padding.
void ExpectCurrent(const AttachedXdp& current, bpf_xdp_attach_opts* opts) {
  memset(opts, 0, sizeof *opts);
  opts->sz = sizeof *opts;
  opts->old_prog_fd = current.fd;
}

}  // namespace

AttachedXdp::~AttachedXdp() {
  if (fd >= 0) close(fd);
}

XdpWorker::XdpWorker(Napi::Env env, const char* name, TcTarget target) : TcWorker(env, name, std::move(target)) {}

void XdpWorker::TcWork() {
  AttachedXdp current;
  const char* call;
  int err = QueryAttached(target_.ifindex, &current, &call);
  if (err != 0) {
    Fail(err, call, Describe(target_));
    return;
  }
  XdpWork(current);
}

// ---- attach ----

XdpAttachWorker::XdpAttachWorker(Napi::Env env, TcTarget target, Resource::Lease lease, int prog_fd,
                                 std::string prog_name)
    : XdpWorker(env, "kbp:xdp_attach", std::move(target)),
      lease_(std::move(lease)),
      prog_fd_(prog_fd),
      prog_name_(std::move(prog_name)) {}

void XdpAttachWorker::XdpWork(const AttachedXdp& current) {
  if (current.id != 0 && current.name != prog_name_) {
    Fail(EBUSY, "bpf_xdp_attach",
         Describe(target_) + " runs another XDP program (" + current.name + ", id " + std::to_string(current.id) +
             "); kbp does not replace it");
    return;
  }
  bpf_xdp_attach_opts opts;
  ExpectCurrent(current, &opts);
  // Over our own program: an atomic swap that fails if it changed meanwhile.
  // Over nothing: fails if someone attached meanwhile.
  uint32_t flags = XDP_FLAGS_DRV_MODE | (current.id != 0 ? XDP_FLAGS_REPLACE : XDP_FLAGS_UPDATE_IF_NOEXIST);
  int err = bpf_xdp_attach(target_.ifindex, prog_fd_, flags, &opts);
  if (err != 0) {
    Fail(err, "bpf_xdp_attach", Describe(target_) + " (native mode)");
    return;
  }
  replaced_ = current.id != 0;
  err = bpf_xdp_query_id(target_.ifindex, XDP_FLAGS_DRV_MODE, &prog_id_);
  if (err != 0) Fail(err, "bpf_xdp_query_id", Describe(target_));
}

Napi::Value XdpAttachWorker::Result(Napi::Env env) {
  Napi::Object result = Napi::Object::New(env);
  result.Set("ifindex", Napi::Number::New(env, target_.ifindex));
  result.Set("progId", Napi::Number::New(env, prog_id_));
  result.Set("replaced", Napi::Boolean::New(env, replaced_));
  return result;
}

// ---- detach ----

XdpDetachWorker::XdpDetachWorker(Napi::Env env, TcTarget target, std::string prog_name)
    : XdpWorker(env, "kbp:xdp_detach", std::move(target)), prog_name_(std::move(prog_name)) {}

void XdpDetachWorker::XdpWork(const AttachedXdp& current) {
  if (current.id == 0 || current.name != prog_name_) return;  // nothing of ours
  bpf_xdp_attach_opts opts;
  ExpectCurrent(current, &opts);
  int err = bpf_xdp_detach(target_.ifindex, XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE, &opts);
  if (err != 0) {
    Fail(err, "bpf_xdp_detach", Describe(target_));
    return;
  }
  detached_ = true;
}

Napi::Value XdpDetachWorker::Result(Napi::Env env) { return Napi::Boolean::New(env, detached_); }

// ---- query ----

XdpQueryWorker::XdpQueryWorker(Napi::Env env, TcTarget target)
    : XdpWorker(env, "kbp:xdp_query", std::move(target)) {}

void XdpQueryWorker::XdpWork(const AttachedXdp& current) {
  prog_id_ = current.id;
  prog_name_ = current.name;
}

Napi::Value XdpQueryWorker::Result(Napi::Env env) {
  if (prog_id_ == 0) return env.Null();
  Napi::Object result = Napi::Object::New(env);
  result.Set("progId", Napi::Number::New(env, prog_id_));
  result.Set("name", Napi::String::New(env, prog_name_));
  return result;
}

}  // namespace kbp
