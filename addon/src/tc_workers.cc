#include "tc_workers.h"

#include <bpf/libbpf.h>
#include <kbp/abi.h>
#include <net/if.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "netns_guard.h"

namespace kbp {

namespace {

bpf_tc_hook IngressHook(int ifindex) {
  bpf_tc_hook hook;
  memset(&hook, 0, sizeof hook);
  hook.sz = sizeof hook;
  hook.ifindex = ifindex;
  hook.attach_point = BPF_TC_INGRESS;
  return hook;
}

bpf_tc_opts FilterOpts(const TcTarget& target) {
  bpf_tc_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  opts.handle = target.handle;
  opts.priority = target.priority;
  return opts;
}

bool ReadUint(const Napi::Value& value, uint32_t max, uint32_t* out) {
  if (!value.IsNumber()) return false;
  double n = value.As<Napi::Number>().DoubleValue();
  if (!(n >= 0) || n > max || n != static_cast<double>(static_cast<uint32_t>(n))) return false;
  *out = static_cast<uint32_t>(n);
  return true;
}

}  // namespace

std::string Describe(const TcTarget& target) {
  std::string device = target.ifname.empty() ? "ifindex " + std::to_string(target.ifindex) : target.ifname;
  if (!target.netns.empty()) device += " in " + target.netns;
  return device;
}

std::string ParseTcTarget(const Napi::Value& value, TcTarget* out) {
  if (!value.IsObject()) return "target must be an object";
  Napi::Object obj = value.As<Napi::Object>();
  Napi::Value ifname = obj.Get("ifname");
  Napi::Value ifindex = obj.Get("ifindex");
  Napi::Value netns = obj.Get("netns");
  Napi::Value handle = obj.Get("handle");
  Napi::Value priority = obj.Get("priority");
  if (value.Env().IsExceptionPending()) return "target could not be read";

  if (ifname.IsString()) {
    out->ifname = ifname.As<Napi::String>().Utf8Value();
    if (out->ifname.empty() || out->ifname.size() >= IF_NAMESIZE) return "ifname is not a device name";
  } else if (!ifname.IsUndefined()) {
    return "ifname must be a string";
  }
  if (!ifindex.IsUndefined()) {
    uint32_t index;
    if (!ReadUint(ifindex, INT32_MAX, &index) || index == 0) return "ifindex must be a positive integer";
    out->ifindex = static_cast<int>(index);
  }
  if (out->ifname.empty() && out->ifindex == 0) return "target needs ifname or ifindex";
  if (netns.IsString()) {
    out->netns = netns.As<Napi::String>().Utf8Value();
  } else if (!netns.IsUndefined()) {
    return "netns must be a string";
  }
  out->handle = KBP_TC_HANDLE;
  if (!handle.IsUndefined() && (!ReadUint(handle, UINT32_MAX, &out->handle) || out->handle == 0)) {
    return "handle must be a positive 32-bit integer";
  }
  out->priority = KBP_TC_PRIORITY;
  // tc priorities are 16 bits; 0 would ask the kernel to pick one.
  if (!priority.IsUndefined() && (!ReadUint(priority, 0xffff, &out->priority) || out->priority == 0)) {
    return "priority must be in 1..65535";
  }
  return "";
}

TcWorker::TcWorker(Napi::Env env, const char* name, TcTarget target)
    : PromiseWorker(env, name), target_(std::move(target)) {}

void TcWorker::Work() {
  NetnsGuard netns;
  int err = netns.Enter(target_.netns);
  if (err != 0) {
    Fail(err, netns.failed_call(), target_.netns);
    return;
  }
  if (!target_.ifname.empty()) {
    unsigned int index = if_nametoindex(target_.ifname.c_str());
    if (index == 0) {
      Fail(errno, "if_nametoindex", Describe(target_));
      return;
    }
    if (target_.ifindex != 0 && target_.ifindex != static_cast<int>(index)) {
      Fail(EINVAL, "if_nametoindex", Describe(target_) + " is not ifindex " + std::to_string(target_.ifindex));
      return;
    }
    target_.ifindex = static_cast<int>(index);
  }
  TcWork();
  // NetnsGuard restores the thread's namespace here, before the pool reuses it.
}

// ---- attach ----

TcAttachWorker::TcAttachWorker(Napi::Env env, TcTarget target, Resource::Lease lease, int prog_fd)
    : TcWorker(env, "kbp:tc_attach", std::move(target)), lease_(std::move(lease)), prog_fd_(prog_fd) {}

void TcAttachWorker::TcWork() {
  bpf_tc_hook hook = IngressHook(target_.ifindex);
  // Creates the clsact qdisc (which carries both hooks); it stays when we
  // detach, as other filters may share it.
  int err = bpf_tc_hook_create(&hook);
  if (err != 0 && -err != EEXIST) {
    Fail(err, "bpf_tc_hook_create", Describe(target_));
    return;
  }
  bpf_tc_opts opts = FilterOpts(target_);
  opts.prog_fd = prog_fd_;
  opts.flags = BPF_TC_F_REPLACE;
  err = bpf_tc_attach(&hook, &opts);
  if (err != 0) {
    Fail(err, "bpf_tc_attach", Describe(target_));
    return;
  }
  prog_id_ = opts.prog_id;
}

Napi::Value TcAttachWorker::Result(Napi::Env env) {
  Napi::Object result = Napi::Object::New(env);
  result.Set("ifindex", Napi::Number::New(env, target_.ifindex));
  result.Set("progId", Napi::Number::New(env, prog_id_));
  return result;
}

// ---- detach ----

TcDetachWorker::TcDetachWorker(Napi::Env env, TcTarget target)
    : TcWorker(env, "kbp:tc_detach", std::move(target)) {}

void TcDetachWorker::TcWork() {
  bpf_tc_hook hook = IngressHook(target_.ifindex);
  bpf_tc_opts opts = FilterOpts(target_);
  int err = bpf_tc_detach(&hook, &opts);
  if (err == 0) {
    detached_ = true;
    return;
  }
  // ENOENT: no filter at our handle/priority. EINVAL: the device has no
  // clsact qdisc at all (the kernel's "Parent Qdisc doesn't exists").
  if (-err == ENOENT || -err == EINVAL) return;
  Fail(err, "bpf_tc_detach", Describe(target_));
}

Napi::Value TcDetachWorker::Result(Napi::Env env) { return Napi::Boolean::New(env, detached_); }

// ---- query ----

TcQueryWorker::TcQueryWorker(Napi::Env env, TcTarget target) : TcWorker(env, "kbp:tc_query", std::move(target)) {}

void TcQueryWorker::TcWork() {
  bpf_tc_hook hook = IngressHook(target_.ifindex);
  bpf_tc_opts opts = FilterOpts(target_);
  int err = bpf_tc_query(&hook, &opts);
  if (err == 0) {
    prog_id_ = opts.prog_id;
    return;
  }
  if (-err == ENOENT || -err == EINVAL) return;  // as in detach
  Fail(err, "bpf_tc_query", Describe(target_));
}

Napi::Value TcQueryWorker::Result(Napi::Env env) {
  if (prog_id_ == 0) return env.Null();
  return Napi::Number::New(env, prog_id_);
}

}  // namespace kbp
