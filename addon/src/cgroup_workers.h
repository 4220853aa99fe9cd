// cgroup attach, detach and query for the host-services socket programs
// (cgroup/connect4, sendmsg4, recvmsg4, getpeername4). Attachments use
// BPF_F_ALLOW_MULTI, so programs of others on the same cgroup and hook keep
// running; attaching with a replace id swaps kbp's program atomically
// (BPF_F_REPLACE), so sockets are never without it during an upgrade. Like tc
// filters, these attachments outlive the process: they stay until detached
// or until the cgroup is removed. The directory must be on cgroup v2.
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

class CgroupAttachWorker : public CgroupWorker {
 public:
  // replace_id: a program attached there now to swap out atomically; 0 = add.
  CgroupAttachWorker(Napi::Env env, CgroupTarget target, Resource::Lease lease, int prog_fd, uint32_t replace_id);

 private:
  void CgroupWork(int cgroup_fd) override;
  Napi::Value Result(Napi::Env env) override;
  Resource::Lease lease_;
  int prog_fd_;
  uint32_t replace_id_;
};

class CgroupDetachWorker : public CgroupWorker {
 public:
  CgroupDetachWorker(Napi::Env env, CgroupTarget target, uint32_t prog_id);

 private:
  void CgroupWork(int cgroup_fd) override;
  Napi::Value Result(Napi::Env env) override;
  uint32_t prog_id_;
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

// Adds cgroupAttach, cgroupDetach, cgroupQuery and netnsCookie to the exports.
void RegisterCgroupFunctions(Napi::Env env, Napi::Object exports);

}  // namespace kbp

#endif  // KBP_ADDON_CGROUP_WORKERS_H
