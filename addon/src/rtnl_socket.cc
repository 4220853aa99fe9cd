#include "rtnl_socket.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kbp {

namespace {

// Dump answers come in skbs of at most 32 KiB; notifications are smaller.
constexpr size_t kReceiveBuffer = 64 * 1024;
// Room for bursts of notifications (a node starting hundreds of pods).
constexpr int kSocketBuffer = 4 * 1024 * 1024;

constexpr size_t Align(size_t len) { return (len + NLMSG_ALIGNTO - 1) & ~static_cast<size_t>(NLMSG_ALIGNTO - 1); }
constexpr size_t kHeaderLen = Align(sizeof(nlmsghdr));

bool DecodeLink(const nlmsghdr* header, LinkMessage* out) {
  size_t len = header->nlmsg_len;
  if (len < kHeaderLen + sizeof(ifinfomsg)) return false;
  const char* payload = reinterpret_cast<const char*>(header) + kHeaderLen;
  ifinfomsg ifi;
  memcpy(&ifi, payload, sizeof ifi);
  out->deleted = header->nlmsg_type == RTM_DELLINK;
  out->ifindex = ifi.ifi_index;
  out->up = (ifi.ifi_flags & IFF_UP) != 0;
  out->name.clear();
  size_t offset = kHeaderLen + Align(sizeof(ifinfomsg));
  const char* base = reinterpret_cast<const char*>(header);
  while (offset + sizeof(rtattr) <= len) {
    rtattr attr;
    memcpy(&attr, base + offset, sizeof attr);
    if (attr.rta_len < sizeof(rtattr) || offset + attr.rta_len > len) break;
    if (attr.rta_type == IFLA_IFNAME) {
      const char* data = base + offset + RTA_LENGTH(0);
      size_t data_len = attr.rta_len - RTA_LENGTH(0);
      out->name.assign(data, strnlen(data, data_len));
    }
    offset += RTA_ALIGN(attr.rta_len);
  }
  return true;
}

}  // namespace

RtnlSocket::~RtnlSocket() {
  if (fd_ >= 0) close(fd_);
}

int RtnlSocket::Open(uint32_t groups, bool nonblocking) {
  int type = SOCK_RAW | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0);
  fd_ = socket(AF_NETLINK, type, NETLINK_ROUTE);
  if (fd_ < 0) {
    failed_call_ = "socket(NETLINK_ROUTE)";
    return errno;
  }
  // Best effort: SO_RCVBUFFORCE needs CAP_NET_ADMIN, SO_RCVBUF is capped by
  // net.core.rmem_max.
  if (setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &kSocketBuffer, sizeof kSocketBuffer) != 0) {
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &kSocketBuffer, sizeof kSocketBuffer);
  }
  sockaddr_nl addr;
  memset(&addr, 0, sizeof addr);
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = groups;
  if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    failed_call_ = "bind(NETLINK_ROUTE)";
    return errno;
  }
  buffer_.resize(kReceiveBuffer);
  return 0;
}

int RtnlSocket::RequestLinkDump() {
  struct {
    nlmsghdr header;
    ifinfomsg ifi;
  } request;
  memset(&request, 0, sizeof request);
  request.header.nlmsg_len = NLMSG_LENGTH(sizeof(ifinfomsg));
  request.header.nlmsg_type = RTM_GETLINK;
  request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  request.header.nlmsg_seq = ++dump_seq_;
  request.ifi.ifi_family = AF_UNSPEC;
  sockaddr_nl kernel;
  memset(&kernel, 0, sizeof kernel);
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd_, &request, request.header.nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    failed_call_ = "sendto(RTM_GETLINK)";
    return errno;
  }
  return 0;
}

int RtnlSocket::Receive(const std::function<void(const LinkMessage&)>& on_link, bool* done) {
  ssize_t got;
  do {
    got = recv(fd_, buffer_.data(), buffer_.size(), MSG_TRUNC);
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    failed_call_ = "recv(NETLINK_ROUTE)";
    return errno;
  }
  if (static_cast<size_t>(got) > buffer_.size()) {
    failed_call_ = "recv(NETLINK_ROUTE)";
    return EMSGSIZE;
  }
  size_t len = static_cast<size_t>(got);
  size_t offset = 0;
  LinkMessage link;
  while (offset + sizeof(nlmsghdr) <= len) {
    const nlmsghdr* header = reinterpret_cast<const nlmsghdr*>(buffer_.data() + offset);
    if (header->nlmsg_len < sizeof(nlmsghdr) || offset + header->nlmsg_len > len) break;
    bool ours = dump_seq_ != 0 && header->nlmsg_seq == dump_seq_;
    switch (header->nlmsg_type) {
      case NLMSG_DONE:
        if (ours) *done = true;
        break;
      case NLMSG_ERROR: {
        nlmsgerr error;
        if (header->nlmsg_len >= kHeaderLen + sizeof error) {
          memcpy(&error, reinterpret_cast<const char*>(header) + kHeaderLen, sizeof error);
          if (error.error != 0) {
            failed_call_ = "RTM_GETLINK";
            return -error.error;
          }
        }
        break;
      }
      case RTM_NEWLINK:
      case RTM_DELLINK:
        if (DecodeLink(header, &link)) on_link(link);
        break;
      default:
        break;
    }
    offset += Align(header->nlmsg_len);
  }
  return 0;
}

}  // namespace kbp
