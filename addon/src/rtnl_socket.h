// A NETLINK_ROUTE socket that speaks just enough rtnetlink for links: dump
// them (RTM_GETLINK) and decode RTM_NEWLINK/RTM_DELLINK, whether they answer
// a dump or arrive as RTMGRP_LINK notifications. The socket belongs to the
// network namespace of the thread that opened it, for its whole life.
#ifndef KBP_ADDON_RTNL_SOCKET_H
#define KBP_ADDON_RTNL_SOCKET_H

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kbp {

struct LinkMessage {
  bool deleted = false;  // RTM_DELLINK
  int ifindex = 0;
  std::string name;
  bool up = false;       // IFF_UP: administratively up
};

class RtnlSocket {
 public:
  RtnlSocket() = default;
  ~RtnlSocket();
  RtnlSocket(const RtnlSocket&) = delete;
  RtnlSocket& operator=(const RtnlSocket&) = delete;

  // groups: RTMGRP_* to subscribe to (0 for request/response only).
  // Returns 0 or a positive errno; failed_call() names the call.
  int Open(uint32_t groups, bool nonblocking);
  int fd() const { return fd_; }
  const char* failed_call() const { return failed_call_; }

  int RequestLinkDump();

  // Reads one datagram and calls on_link for each link in it. *done is set
  // when the answer to our dump is complete. Returns 0 or a positive errno
  // (EAGAIN when nothing is queued on a nonblocking socket; ENOBUFS when the
  // kernel dropped notifications because we read too slowly).
  int Receive(const std::function<void(const LinkMessage&)>& on_link, bool* done);

 private:
  int fd_ = -1;
  uint32_t dump_seq_ = 0;
  const char* failed_call_ = "";
  std::vector<char> buffer_;
};

}  // namespace kbp

#endif  // KBP_ADDON_RTNL_SOCKET_H
