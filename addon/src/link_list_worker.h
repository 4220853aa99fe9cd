// listLinks: every device of a namespace, by an RTM_GETLINK dump.
#ifndef KBP_ADDON_LINK_LIST_WORKER_H
#define KBP_ADDON_LINK_LIST_WORKER_H

#include <napi.h>

#include <string>
#include <vector>

#include "promise_worker.h"
#include "rtnl_socket.h"

namespace kbp {

class LinkListWorker : public PromiseWorker {
 public:
  LinkListWorker(Napi::Env env, std::string netns);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  std::string netns_;
  std::vector<LinkMessage> links_;
};

}  // namespace kbp

#endif  // KBP_ADDON_LINK_LIST_WORKER_H
