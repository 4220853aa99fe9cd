// tc attach, detach and query on a device's clsact ingress hook. kbp owns
// exactly one filter per hook, identified by (handle, priority); attaching
// replaces that filter atomically (BPF_TC_F_REPLACE), so traffic is never
// without a program during an upgrade, and filters of others are never
// touched. The work runs inside the target's network namespace when one is
// given (see NetnsGuard).
#ifndef KBP_ADDON_TC_WORKERS_H
#define KBP_ADDON_TC_WORKERS_H

#include <napi.h>

#include <cstdint>
#include <string>

#include "promise_worker.h"
#include "resource.h"

namespace kbp {

struct TcTarget {
  std::string ifname;  // resolved inside the namespace; empty: use ifindex
  int ifindex = 0;
  std::string netns;   // namespace file; empty: the calling thread's namespace
  uint32_t handle = 0;
  uint32_t priority = 0;
};

// "eth0 in /run/netns/x", for error messages.
std::string Describe(const TcTarget& target);

// Reads a JS TcTarget. Returns an empty string, or what is wrong with it.
std::string ParseTcTarget(const Napi::Value& value, TcTarget* out);

// Shared steps: enter the namespace, resolve the device, then TcWork() (the
// XDP workers build on it too: the steps are the device's, not tc's).
class TcWorker : public PromiseWorker {
 protected:
  TcWorker(Napi::Env env, const char* name, TcTarget target);
  virtual void TcWork() = 0;
  TcTarget target_;

 private:
  void Work() override;
};

class TcAttachWorker : public TcWorker {
 public:
  TcAttachWorker(Napi::Env env, TcTarget target, Resource::Lease lease, int prog_fd);

 private:
  void TcWork() override;
  Napi::Value Result(Napi::Env env) override;
  Resource::Lease lease_;
  int prog_fd_;
  uint32_t prog_id_ = 0;
};

class TcDetachWorker : public TcWorker {
 public:
  TcDetachWorker(Napi::Env env, TcTarget target);

 private:
  void TcWork() override;
  Napi::Value Result(Napi::Env env) override;
  bool detached_ = false;
};

class TcQueryWorker : public TcWorker {
 public:
  TcQueryWorker(Napi::Env env, TcTarget target);

 private:
  void TcWork() override;
  Napi::Value Result(Napi::Env env) override;
  uint32_t prog_id_ = 0;
};

}  // namespace kbp

#endif  // KBP_ADDON_TC_WORKERS_H
