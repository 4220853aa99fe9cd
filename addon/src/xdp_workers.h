// XDP attach, detach and query on a device (native mode only: the driver runs
// the program before it allocates an skb; a device without native support is
// reported, and the agent keeps the device on tc alone). kbp owns at most one
// XDP program per device, recognised by its name; attaching over another
// owner's program is refused, attaching over our own replaces it atomically
// (XDP_FLAGS_REPLACE), and detaching never removes another owner's. The work
// runs inside the target's network namespace (TcWorker's steps).
#ifndef KBP_ADDON_XDP_WORKERS_H
#define KBP_ADDON_XDP_WORKERS_H

#include <napi.h>

#include <cstdint>
#include <string>

#include "resource.h"
#include "tc_workers.h"

namespace kbp {

// The device's native-mode XDP program as found before the work: its id (0:
// none), name, and an fd to it (-1 when none) to name it as the expected
// program of an atomic replace or detach.
struct AttachedXdp {
  uint32_t id = 0;
  std::string name;
  int fd = -1;
  AttachedXdp() = default;
  AttachedXdp(const AttachedXdp&) = delete;
  AttachedXdp& operator=(const AttachedXdp&) = delete;
  ~AttachedXdp();
};

// TcWorker's steps, then the device's current XDP program, then XdpWork().
class XdpWorker : public TcWorker {
 protected:
  XdpWorker(Napi::Env env, const char* name, TcTarget target);
  virtual void XdpWork(const AttachedXdp& current) = 0;

 private:
  void TcWork() override;
};

class XdpAttachWorker : public XdpWorker {
 public:
  XdpAttachWorker(Napi::Env env, TcTarget target, Resource::Lease lease, int prog_fd, std::string prog_name);

 private:
  void XdpWork(const AttachedXdp& current) override;
  Napi::Value Result(Napi::Env env) override;
  Resource::Lease lease_;
  int prog_fd_;
  std::string prog_name_;
  uint32_t prog_id_ = 0;
  bool replaced_ = false;
};

class XdpDetachWorker : public XdpWorker {
 public:
  XdpDetachWorker(Napi::Env env, TcTarget target, std::string prog_name);

 private:
  void XdpWork(const AttachedXdp& current) override;
  Napi::Value Result(Napi::Env env) override;
  std::string prog_name_;
  bool detached_ = false;
};

class XdpQueryWorker : public XdpWorker {
 public:
  XdpQueryWorker(Napi::Env env, TcTarget target);

 private:
  void XdpWork(const AttachedXdp& current) override;
  Napi::Value Result(Napi::Env env) override;
  uint32_t prog_id_ = 0;
  std::string prog_name_;
};

}  // namespace kbp

#endif  // KBP_ADDON_XDP_WORKERS_H
