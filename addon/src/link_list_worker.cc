#include "link_list_worker.h"

#include <utility>

#include "netns_guard.h"

namespace kbp {

LinkListWorker::LinkListWorker(Napi::Env env, std::string netns)
    : PromiseWorker(env, "kbp:list_links"), netns_(std::move(netns)) {}

void LinkListWorker::Work() {
  NetnsGuard netns;
  int err = netns.Enter(netns_);
  if (err != 0) {
    Fail(err, netns.failed_call(), netns_);
    return;
  }
  RtnlSocket socket;
  err = socket.Open(0, false);
  if (err == 0) err = socket.RequestLinkDump();
  bool done = false;
  while (err == 0 && !done) {
    err = socket.Receive([this](const LinkMessage& link) { links_.push_back(link); }, &done);
  }
  if (err != 0) Fail(err, socket.failed_call(), netns_);
}

Napi::Value LinkListWorker::Result(Napi::Env env) {
  Napi::Array array = Napi::Array::New(env, links_.size());
  for (size_t i = 0; i < links_.size(); i++) {
    Napi::Object link = Napi::Object::New(env);
    link.Set("ifindex", Napi::Number::New(env, links_[i].ifindex));
    link.Set("name", Napi::String::New(env, links_[i].name));
    link.Set("up", Napi::Boolean::New(env, links_[i].up));
    array.Set(static_cast<uint32_t>(i), link);
  }
  return array;
}

}  // namespace kbp
