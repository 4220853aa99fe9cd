#include "netns_guard.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace kbp {

NetnsGuard::~NetnsGuard() { Restore(); }

int NetnsGuard::Enter(const std::string& path) {
  if (path.empty()) return 0;
  if (original_fd_ >= 0) {
    failed_call_ = "setns";
    return EBUSY;  // one level only: nesting would hide which namespace to restore
  }
  // thread-self, not self: the namespace of this thread, which may differ
  // from the main thread's.
  int original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original < 0) {
    failed_call_ = "open(/proc/thread-self/ns/net)";
    return errno;
  }
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int err = errno;
    close(original);
    failed_call_ = "open(netns)";
    return err;
  }
  if (setns(target, CLONE_NEWNET) != 0) {
    int err = errno;
    close(target);
    close(original);
    failed_call_ = "setns";
    return err;
  }
  close(target);
  original_fd_ = original;
  return 0;
}

void NetnsGuard::Restore() {
  if (original_fd_ < 0) return;
  if (setns(original_fd_, CLONE_NEWNET) != 0) {
    fprintf(stderr,
            "kbp native: FATAL: cannot return a thread to its network namespace "
            "(setns: %s); aborting rather than running later work in a foreign namespace\n",
            strerror(errno));
    abort();
  }
  close(original_fd_);
  original_fd_ = -1;
}

}  // namespace kbp
