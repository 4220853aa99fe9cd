// LinkWatcher: link notifications of one network namespace, delivered to JS.
//
// A NETLINK_ROUTE socket subscribed to RTMGRP_LINK is opened on a dedicated
// thread (inside the namespace, so it watches that namespace for its whole
// life) and read there; events reach the JS thread through a thread-safe
// function. RTM_NEWLINK is reported as 'add' (also for flag changes: the
// consumer de-duplicates), RTM_DELLINK as 'del'. If the kernel drops
// notifications (ENOBUFS) the error callback says so and watching goes on:
// the consumer re-lists. close() wakes the thread through an eventfd, joins
// it and releases the thread-safe function. The watcher never keeps the
// process alive by itself, and environment teardown stops it too.
#ifndef KBP_ADDON_LINK_WATCHER_H
#define KBP_ADDON_LINK_WATCHER_H

#include <napi.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <utility>

#include "rtnl_socket.h"

namespace kbp {

class LinkWatcher : public Napi::ObjectWrap<LinkWatcher> {
 public:
  static Napi::Function Define(Napi::Env env);
  // watchLinks(netns, onEvent, onError)
  static Napi::Value Watch(const Napi::CallbackInfo& info);

  explicit LinkWatcher(const Napi::CallbackInfo& info);
  ~LinkWatcher() override;

 private:
  struct Context {
    Napi::FunctionReference on_event;
    Napi::FunctionReference on_error;
    std::atomic<bool> closed{false};
  };
  struct Message {
    bool is_error = false;
    LinkMessage link;
    int err = 0;
    std::string syscall;
  };
  static void CallJs(Napi::Env env, Napi::Function unused, Context* context, Message* message);
  using Tsfn = Napi::TypedThreadSafeFunction<Context, Message, &LinkWatcher::CallJs>;

  Napi::Value Close(const Napi::CallbackInfo& info);
  // JS thread; idempotent.
  void Stop();
  static void OnEnvCleanup(void* arg);

  // Watcher thread.
  void Run(std::string netns, std::promise<std::pair<int, std::string>>* ready);
  void Deliver(Message* message);
  void DeliverError(int err, const std::string& syscall);

  Napi::Env env_;
  Tsfn tsfn_;
  Context* context_ = nullptr;  // owned by the tsfn; freed by its finalizer
  RtnlSocket socket_;
  int wake_fd_ = -1;
  std::thread thread_;
  bool started_ = false;
  bool stopped_ = false;
  bool cleanup_hook_ = false;
};

}  // namespace kbp

#endif  // KBP_ADDON_LINK_WATCHER_H
