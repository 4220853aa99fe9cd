// cgroup links for the host-services socket programs (cgroup/connect4,
// sendmsg4, recvmsg4, getpeername4), pinned on a bpffs. A bpf_link runs
// alongside whatever else is attached to the cgroup (links are always
// multi-attach), survives the agent while its pin exists, and is updated in
// place (bpf_link_update: atomic, sockets are never without a program) by the
// next agent, which finds it by its pin: no CAP_SYS_ADMIN is needed to find or
// replace kbp's program, unlike a bpf_prog_attach by program id. Removing the
// pin (and detaching the link) removes the hook, so unpinning kbp's bpffs
// folder never leaves a program attached to maps that are gone.
#ifndef KBP_ADDON_CGROUP_WORKERS_H
#define KBP_ADDON_CGROUP_WORKERS_H

#include <linux/bpf.h>
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "promise_worker.h"
#include "resource.h"

namespace kbp {

struct CgroupTarget {
  std::string path;         // cgroup v2 directory
  std::string hook;         // "connect4", ... (as given, for messages)
  bpf_attach_type type{};   // BPF_CGROUP_INET4_CONNECT, ...
};

// Reads a JS CgroupTarget {path, hook}. Returns an empty string, or what is wrong with it.
std::string ParseCgroupTarget(const Napi::Value& value, CgroupTarget* out);

// Shared step: open the directory and check it is a cgroup v2, then CgroupWork(fd).
class CgroupWorker : public PromiseWorker {
 protected:
  CgroupWorker(Napi::Env env, const char* name, CgroupTarget target);
  virtual void CgroupWork(int cgroup_fd) = 0;
  std::string Describe() const;
  CgroupTarget target_;

 private:
  void Work() override;
};

// Attach prog to the cgroup's hook through the link pinned at pin_path: the
// pinned link is updated to prog when it is a link of this cgroup and hook;
// otherwise it is detached and replaced by a new link pinned there.
class CgroupLinkWorker : public CgroupWorker {
 public:
  CgroupLinkWorker(Napi::Env env, CgroupTarget target, Resource::Lease lease, int prog_fd, std::string pin_path);

 private:
  void CgroupWork(int cgroup_fd) override;
  Napi::Value Result(Napi::Env env) override;
  Resource::Lease lease_;
  int prog_fd_;
  std::string pin_path_;
  uint32_t link_id_ = 0;
  bool updated_ = false;
};

// Detach the link pinned at a path (it stops running at once, whoever else
// holds it); the pin stays for the caller to remove. False when there is no
// pin or the link was detached already.
class LinkDetachWorker : public PromiseWorker {
 public:
  LinkDetachWorker(Napi::Env env, std::string pin_path);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  std::string pin_path_;
  bool detached_ = false;
};

class CgroupQueryWorker : public CgroupWorker {
 public:
  CgroupQueryWorker(Napi::Env env, CgroupTarget target);

 private:
  void CgroupWork(int cgroup_fd) override;
  Napi::Value Result(Napi::Env env) override;
  std::vector<uint32_t> ids_;
  uint32_t attach_flags_ = 0;
};

// The cookie of a network namespace (SO_NETNS_COOKIE on a socket opened
// there): what bpf_get_netns_cookie() returns for its sockets.
class NetnsCookieWorker : public PromiseWorker {
 public:
  NetnsCookieWorker(Napi::Env env, std::string netns);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  std::string netns_;
  uint64_t cookie_ = 0;
};

// Adds cgroupLink, linkDetach, cgroupQuery and netnsCookie to the exports.
void RegisterCgroupFunctions(Napi::Env env, Napi::Object exports);

}  // namespace kbp

#endif  // KBP_ADDON_CGROUP_WORKERS_H
