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

// ---- link ----

namespace {

// The id the kernel gives the cgroup (what a cgroup link reports): its file handle.
int CgroupId(int cgroup_fd, uint64_t* id) {
  struct {
    struct file_handle fh;
    uint64_t id;
  } h;
  h.fh.handle_bytes = sizeof h.id;
  int mount_id;
  if (name_to_handle_at(cgroup_fd, "", &h.fh, &mount_id, AT_EMPTY_PATH) != 0) return errno;
  memcpy(id, h.fh.f_handle, sizeof *id);
  return 0;
}

}  // namespace

CgroupLinkWorker::CgroupLinkWorker(Napi::Env env, CgroupTarget target, Resource::Lease lease, int prog_fd,
                                   std::string pin_path)
    : CgroupWorker(env, "kbp:cgroup_link", std::move(target)),
      lease_(std::move(lease)),
      prog_fd_(prog_fd),
      pin_path_(std::move(pin_path)) {}

void CgroupLinkWorker::CgroupWork(int cgroup_fd) {
  uint64_t cgroup_id = 0;
  int err = CgroupId(cgroup_fd, &cgroup_id);
  if (err != 0) {
    Fail(err, "name_to_handle_at", target_.path);
    return;
  }
  Fd pinned(bpf_obj_get(pin_path_.c_str()));
  if (pinned.get() < 0 && errno != ENOENT) {
    Fail(errno, "bpf_obj_get", pin_path_);
    return;
  }
  if (pinned.get() >= 0) {
    struct bpf_link_info info;
    memset(&info, 0, sizeof info);
    uint32_t len = sizeof info;
    err = bpf_obj_get_info_by_fd(pinned.get(), &info, &len);
    if (err != 0) {
      Fail(err, "bpf_obj_get_info_by_fd", pin_path_ + " (not a link?)");
      return;
    }
    if (info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == cgroup_id &&
        info.cgroup.attach_type == static_cast<uint32_t>(target_.type)) {
      err = bpf_link_update(pinned.get(), prog_fd_, nullptr);
      if (err != 0) {
        Fail(err, "bpf_link_update", pin_path_ + " on " + Describe());
        return;
      }
      link_id_ = info.id;
      updated_ = true;
      return;
    }
    // A link of another cgroup or hook (the flag changed): it goes.
    err = bpf_link_detach(pinned.get());
    if (err != 0 && -err != EINVAL) {  // EINVAL: already detached
      Fail(err, "bpf_link_detach", pin_path_);
      return;
    }
    if (unlink(pin_path_.c_str()) != 0 && errno != ENOENT) {
      Fail(errno, "unlink", pin_path_);
      return;
    }
  }
  Fd link(bpf_link_create(prog_fd_, cgroup_fd, target_.type, nullptr));
  if (link.get() < 0) {
    Fail(errno, "bpf_link_create", Describe());
    return;
  }
  // Unpinned, the link would go with this fd: pin before reporting success.
  err = bpf_obj_pin(link.get(), pin_path_.c_str());
  if (err != 0) {
    Fail(err, "bpf_obj_pin", pin_path_);
    return;
  }
  struct bpf_link_info info;
  memset(&info, 0, sizeof info);
  uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(link.get(), &info, &len) == 0) link_id_ = info.id;
}

Napi::Value CgroupLinkWorker::Result(Napi::Env env) {
  Napi::Object result = Napi::Object::New(env);
  result.Set("linkId", Napi::Number::New(env, link_id_));
  result.Set("updated", Napi::Boolean::New(env, updated_));
  return result;
}

// ---- detach ----

LinkDetachWorker::LinkDetachWorker(Napi::Env env, std::string pin_path)
    : PromiseWorker(env, "kbp:link_detach"), pin_path_(std::move(pin_path)) {}

void LinkDetachWorker::Work() {
  Fd link(bpf_obj_get(pin_path_.c_str()));
  if (link.get() < 0) {
    if (errno != ENOENT) Fail(errno, "bpf_obj_get", pin_path_);
    return;
  }
  // A detached cgroup link reports cgroup id 0 (and detaching it again
  // succeeds without doing anything): it counts as not detached here.
  struct bpf_link_info info;
  memset(&info, 0, sizeof info);
  uint32_t len = sizeof info;
  int err = bpf_obj_get_info_by_fd(link.get(), &info, &len);
  if (err != 0) {
    Fail(err, "bpf_obj_get_info_by_fd", pin_path_ + " (not a link?)");
    return;
  }
  if (info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == 0) return;
  err = bpf_link_detach(link.get());
  if (err != 0) {
    Fail(err, "bpf_link_detach", pin_path_);
    return;
  }
  detached_ = true;
}

Napi::Value LinkDetachWorker::Result(Napi::Env env) { return Napi::Boolean::New(env, detached_); }

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

// cgroupLink(target, prog, pinPath)
Napi::Value CgroupLink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_link_create";
  CgroupTarget target;
  std::string problem = ParseCgroupTarget(info[0], &target);
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (!problem.empty()) return RejectedErrno(env, EINVAL, call, problem);
  BpfProgram* prog = BpfProgram::FromValue(env, info[1]);
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (prog == nullptr) return RejectedErrno(env, EINVAL, call, "prog must be a BpfProgram");
  if (!info[2].IsString()) return RejectedErrno(env, EINVAL, call, "pinPath must be a string");
  int fd;
  Resource::Lease lease = prog->Acquire(&fd);
  if (!lease) return RejectedErrno(env, EBADF, call, "program " + prog->info().name + " is closed");
  return (new CgroupLinkWorker(env, std::move(target), std::move(lease), fd, info[2].As<Napi::String>().Utf8Value()))
      ->Start();
}

// linkDetach(pinPath)
Napi::Value LinkDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return RejectedErrno(env, EINVAL, "bpf_link_detach", "pinPath must be a string");
  return (new LinkDetachWorker(env, info[0].As<Napi::String>().Utf8Value()))->Start();
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
  exports.Set("cgroupLink", Napi::Function::New<CgroupLink>(env, "cgroupLink"));
  exports.Set("linkDetach", Napi::Function::New<LinkDetach>(env, "linkDetach"));
  exports.Set("cgroupQuery", Napi::Function::New<CgroupQuery>(env, "cgroupQuery"));
  exports.Set("netnsCookie", Napi::Function::New<NetnsCookie>(env, "netnsCookie"));
}

}  // namespace kbp
