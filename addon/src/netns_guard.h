// Runs a stretch of a thread inside another network namespace. setns() with
// CLONE_NEWNET moves only the calling thread, so a worker thread can enter a
// pod's or node's namespace, open its netlink sockets there, and come back.
// The guard restores the thread's original namespace when it goes out of
// scope; if that fails the process aborts: a libuv thread silently left in a
// foreign namespace would run later, unrelated work against the wrong devices.
#ifndef KBP_ADDON_NETNS_GUARD_H
#define KBP_ADDON_NETNS_GUARD_H

#include <string>

namespace kbp {

class NetnsGuard {
 public:
  NetnsGuard() = default;
  ~NetnsGuard();
  NetnsGuard(const NetnsGuard&) = delete;
  NetnsGuard& operator=(const NetnsGuard&) = delete;

  // Enters the namespace behind `path` (e.g. /var/run/netns/NAME); an empty
  // path is a no-op. Returns 0 or a positive errno; failed_call() names the
  // call that failed. On failure the thread is still in its own namespace.
  int Enter(const std::string& path);
  const char* failed_call() const { return failed_call_; }

  // Back to the original namespace now (also done by the destructor).
  void Restore();

 private:
  int original_fd_ = -1;
  const char* failed_call_ = "";
};

}  // namespace kbp

#endif  // KBP_ADDON_NETNS_GUARD_H
