#include "cgroup_workers.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/socket.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "bpf_program.h"
#include "errors.h"
#include "netns_guard.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace kbp {

namespace {

struct Hook {
  const char* name;
  bpf_attach_type type;
};

// The hooks kbp attaches to; others are refused rather than guessed.
constexpr Hook kHooks[] = {
    {"connect4", BPF_CGROUP_INET4_CONNECT},
    {"sendmsg4", BPF_CGROUP_UDP4_SENDMSG},
    {"recvmsg4", BPF_CGROUP_UDP4_RECVMSG},
    {"getpeername4", BPF_CGROUP_INET4_GETPEERNAME},
};

// Closes an fd on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

std::string ParseCgroupTarget(const Napi::Value& value, CgroupTarget* out) {
  if (!value.IsObject()) return "target must be an object";
  Napi::Object obj = value.As<Napi::Object>();
  Napi::Value path = obj.Get("path");
  Napi::Value hook = obj.Get("hook");
  if (value.Env().IsExceptionPending()) return "target could not be read";
  if (!path.IsString() || path.As<Napi::String>().Utf8Value().empty()) return "path must be a non-empty string";
  out->path = path.As<Napi::String>().Utf8Value();
  if (!hook.IsString()) return "hook must be a string";
  out->hook = hook.As<Napi::String>().Utf8Value();
  for (const Hook& h : kHooks) {
    if (out->hook == h.name) {
      out->type = h.type;
      return "";
    }
  }
  return "hook must be one of connect4, sendmsg4, recvmsg4, getpeername4";
}

CgroupWorker::CgroupWorker(Napi::Env env, const char* name, CgroupTarget target)
    : PromiseWorker(env, name), target_(std::move(target)) {}

std::string CgroupWorker::Describe() const { return target_.hook + " of cgroup " + target_.path; }

void CgroupWorker::Work() {
  Fd fd(open(target_.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) {
    Fail(errno, "open", target_.path);
    return;
  }
  // A cgroup v1 hierarchy (or any other directory) would be refused by the
  // kernel with a bare EBADF; say what is wrong instead.
  struct statfs fs;
  if (fstatfs(fd.get(), &fs) != 0) {
    Fail(errno, "fstatfs", target_.path);
    return;
  }
  if (fs.f_type != CGROUP2_SUPER_MAGIC) {
    Fail(ENOTDIR, "fstatfs", target_.path + " is not a cgroup v2 directory");
    return;
  }
  CgroupWork(fd.get());
}

// ---- attach ----

CgroupAttachWorker::CgroupAttachWorker(Napi::Env env, CgroupTarget target, Resource::Lease lease, int prog_fd,
                                       uint32_t replace_id)
    : CgroupWorker(env, "kbp:cgroup_attach", std::move(target)),
      lease_(std::move(lease)),
      prog_fd_(prog_fd),
      replace_id_(replace_id) {}

void CgroupAttachWorker::CgroupWork(int cgroup_fd) {
  struct bpf_prog_attach_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  opts.flags = BPF_F_ALLOW_MULTI;
  int replace_fd = -1;
  if (replace_id_ != 0) {
    replace_fd = bpf_prog_get_fd_by_id(replace_id_);
    if (replace_fd < 0) {
      Fail(errno, "bpf_prog_get_fd_by_id", "program " + std::to_string(replace_id_) + " to replace on " + Describe());
      return;
    }
    opts.flags |= BPF_F_REPLACE;
    opts.replace_prog_fd = replace_fd;
  }
  Fd replace(replace_fd);
  int err = bpf_prog_attach_opts(prog_fd_, cgroup_fd, target_.type, &opts);
  if (err != 0) Fail(err, "bpf_prog_attach", Describe());
}

Napi::Value CgroupAttachWorker::Result(Napi::Env env) { return env.Undefined(); }

// ---- detach ----

CgroupDetachWorker::CgroupDetachWorker(Napi::Env env, CgroupTarget target, uint32_t prog_id)
    : CgroupWorker(env, "kbp:cgroup_detach", std::move(target)), prog_id_(prog_id) {}

void CgroupDetachWorker::CgroupWork(int cgroup_fd) {
  Fd prog(bpf_prog_get_fd_by_id(prog_id_));
  if (prog.get() < 0) {
    // ENOENT: the program is gone, so it is attached nowhere.
    if (errno == ENOENT) return;
    Fail(errno, "bpf_prog_get_fd_by_id", "program " + std::to_string(prog_id_));
    return;
  }
  int err = bpf_prog_detach2(prog.get(), cgroup_fd, target_.type);
  if (err == 0) {
    detached_ = true;
    return;
  }
  // ENOENT: not attached to this cgroup and hook.
  if (-err == ENOENT) return;
  Fail(err, "bpf_prog_detach2", "program " + std::to_string(prog_id_) + " from " + Describe());
}

Napi::Value CgroupDetachWorker::Result(Napi::Env env) { return Napi::Boolean::New(env, detached_); }

// ---- query ----

CgroupQueryWorker::CgroupQueryWorker(Napi::Env env, CgroupTarget target)
    : CgroupWorker(env, "kbp:cgroup_query", std::move(target)) {}

void CgroupQueryWorker::CgroupWork(int cgroup_fd) {
  // The programs attached to this cgroup itself (not inherited ones).
  // ENOSPC: more than fit; the kernel reports how many there are.
  uint32_t count = 16;
  for (int attempt = 0; attempt < 4; attempt++) {
    ids_.assign(count, 0);
    uint32_t got = count;
    int err = bpf_prog_query(cgroup_fd, target_.type, 0, &attach_flags_, ids_.data(), &got);
    if (err == 0) {
      ids_.resize(got);
      return;
    }
    if (-err != ENOSPC) {
      Fail(err, "bpf_prog_query", Describe());
      return;
    }
    count = got > count ? got : count * 2;
  }
  Fail(ENOSPC, "bpf_prog_query", Describe() + ": the attached programs keep changing");
}

Napi::Value CgroupQueryWorker::Result(Napi::Env env) {
  Napi::Object result = Napi::Object::New(env);
  Napi::Array ids = Napi::Array::New(env, ids_.size());
  for (size_t i = 0; i < ids_.size(); i++) ids.Set(static_cast<uint32_t>(i), Napi::Number::New(env, ids_[i]));
  result.Set("progIds", ids);
  result.Set("attachFlags", Napi::Number::New(env, attach_flags_));
  return result;
}

// ---- netns cookie ----

NetnsCookieWorker::NetnsCookieWorker(Napi::Env env, std::string netns)
    : PromiseWorker(env, "kbp:netns_cookie"), netns_(std::move(netns)) {}

void NetnsCookieWorker::Work() {
  NetnsGuard guard;
  int err = guard.Enter(netns_);
  if (err != 0) {
    Fail(err, guard.failed_call(), netns_);
    return;
  }
  // The socket belongs to the namespace it was created in.
  Fd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (sock.get() < 0) {
    Fail(errno, "socket");
    return;
  }
  socklen_t len = sizeof cookie_;
  if (getsockopt(sock.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie_, &len) != 0) {
    Fail(errno, "getsockopt", "SO_NETNS_COOKIE");
    return;
  }
}

Napi::Value NetnsCookieWorker::Result(Napi::Env env) { return Napi::BigInt::New(env, cookie_); }

// ---- entry points ----

namespace {

bool ReadProgId(const Napi::Value& value, uint32_t* out) {
  if (!value.IsNumber()) return false;
  double n = value.As<Napi::Number>().DoubleValue();
  if (!(n >= 1) || n > UINT32_MAX || n != static_cast<double>(static_cast<uint32_t>(n))) return false;
  *out = static_cast<uint32_t>(n);
  return true;
}

// cgroupAttach(target, prog, replaceProgId?)
Napi::Value CgroupAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_prog_attach";
  CgroupTarget target;
  std::string problem = ParseCgroupTarget(info[0], &target);
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (!problem.empty()) return RejectedErrno(env, EINVAL, call, problem);
  BpfProgram* prog = BpfProgram::FromValue(env, info[1]);
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (prog == nullptr) return RejectedErrno(env, EINVAL, call, "prog must be a BpfProgram");
  uint32_t replace_id = 0;
  if (!info[2].IsUndefined() && !info[2].IsNull() && !ReadProgId(info[2], &replace_id)) {
    return RejectedErrno(env, EINVAL, call, "replaceProgId must be a positive integer");
  }
  int fd;
  Resource::Lease lease = prog->Acquire(&fd);
  if (!lease) return RejectedErrno(env, EBADF, call, "program " + prog->info().name + " is closed");
  return (new CgroupAttachWorker(env, std::move(target), std::move(lease), fd, replace_id))->Start();
}

// cgroupDetach(target, progId)
Napi::Value CgroupDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_prog_detach2";
  CgroupTarget target;
  std::string problem = ParseCgroupTarget(info[0], &target);
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (!problem.empty()) return RejectedErrno(env, EINVAL, call, problem);
  uint32_t id;
  if (!ReadProgId(info[1], &id)) return RejectedErrno(env, EINVAL, call, "progId must be a positive integer");
  return (new CgroupDetachWorker(env, std::move(target), id))->Start();
}

// cgroupQuery(target)
Napi::Value CgroupQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CgroupTarget target;
  std::string problem = ParseCgroupTarget(info[0], &target);
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (!problem.empty()) return RejectedErrno(env, EINVAL, "bpf_prog_query", problem);
  return (new CgroupQueryWorker(env, std::move(target)))->Start();
}

// netnsCookie(netns?)
Napi::Value NetnsCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns;
  if (info[0].IsString()) {
    netns = info[0].As<Napi::String>().Utf8Value();
  } else if (!info[0].IsUndefined() && !info[0].IsNull()) {
    return RejectedErrno(env, EINVAL, "getsockopt", "netns must be a string");
  }
  return (new NetnsCookieWorker(env, std::move(netns)))->Start();
}

}  // namespace

void RegisterCgroupFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("cgroupAttach", Napi::Function::New<CgroupAttach>(env, "cgroupAttach"));
  exports.Set("cgroupDetach", Napi::Function::New<CgroupDetach>(env, "cgroupDetach"));
  exports.Set("cgroupQuery", Napi::Function::New<CgroupQuery>(env, "cgroupQuery"));
  exports.Set("netnsCookie", Napi::Function::New<NetnsCookie>(env, "netnsCookie"));
}

}  // namespace kbp
