#include "link_watcher.h"

#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <system_error>

#include "addon_data.h"
#include "errors.h"
#include "netns_guard.h"

namespace kbp {

Napi::Function LinkWatcher::Define(Napi::Env env) {
  return DefineClass(env, "LinkWatcher", {InstanceMethod<&LinkWatcher::Close>("close")});
}

LinkWatcher::LinkWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LinkWatcher>(info), env_(info.Env()) {}

LinkWatcher::~LinkWatcher() { Stop(); }

Napi::Value LinkWatcher::Watch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns;
  if (info[0].IsString()) {
    netns = info[0].As<Napi::String>().Utf8Value();
  } else if (!info[0].IsUndefined() && !info[0].IsNull()) {
    Napi::TypeError::New(env, "netns must be a string or undefined").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (!info[1].IsFunction() || !info[2].IsFunction()) {
    Napi::TypeError::New(env, "onEvent and onError must be functions").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  Napi::Object obj = GetAddonData(env)->link_watcher.New({});
  if (env.IsExceptionPending()) return env.Undefined();
  LinkWatcher* self = LinkWatcher::Unwrap(obj);

  self->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (self->wake_fd_ < 0) return ThrowErrno(env, errno, "eventfd");

  auto* context = new Context();
  context->on_event = Napi::Persistent(info[1].As<Napi::Function>());
  context->on_error = Napi::Persistent(info[2].As<Napi::Function>());
  self->context_ = context;
  self->tsfn_ = Tsfn::New(env, "kbp:link_watch", 0, 1, context,
                          [](Napi::Env, void*, Context* ctx) { delete ctx; });
  self->tsfn_.Unref(env);
  self->started_ = true;

  // The thread opens the socket inside the namespace and reports back before
  // watching, so a missing namespace fails here, synchronously.
  std::promise<std::pair<int, std::string>> ready;
  std::future<std::pair<int, std::string>> opened = ready.get_future();
  try {
    self->thread_ = std::thread(&LinkWatcher::Run, self, netns, &ready);
  } catch (const std::system_error& e) {
    self->Stop();
    return ThrowErrno(env, e.code().value(), "pthread_create");
  }
  auto [err, call] = opened.get();
  if (err != 0) {
    self->Stop();
    return ThrowErrno(env, err, call, netns);
  }
  if (napi_add_env_cleanup_hook(env, &LinkWatcher::OnEnvCleanup, self) == napi_ok) self->cleanup_hook_ = true;
  return obj;
}

void LinkWatcher::Run(std::string netns, std::promise<std::pair<int, std::string>>* ready) {
  {
    NetnsGuard guard;
    int err = guard.Enter(netns);
    if (err != 0) {
      ready->set_value({err, guard.failed_call()});
      return;
    }
    err = socket_.Open(RTMGRP_LINK, true);
    if (err != 0) {
      ready->set_value({err, socket_.failed_call()});
      return;
    }
  }
  ready->set_value({0, ""});  // `ready` is gone from here on

  auto on_link = [this](const LinkMessage& link) {
    auto* message = new Message();
    message->link = link;
    Deliver(message);
  };
  for (;;) {
    pollfd fds[2] = {{socket_.fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int n = poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      DeliverError(errno, "poll");
      return;
    }
    if (fds[1].revents != 0) return;  // close()
    if (fds[0].revents == 0) continue;
    // Drain the socket. An overrun shows as POLLERR and recv() failing with
    // ENOBUFS once; the socket stays usable.
    for (;;) {
      bool done = false;
      int err = socket_.Receive(on_link, &done);
      if (err == 0) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      DeliverError(err, socket_.failed_call());
      if (err == ENOBUFS) continue;
      return;
    }
  }
}

void LinkWatcher::Deliver(Message* message) {
  if (tsfn_.NonBlockingCall(message) != napi_ok) delete message;
}

void LinkWatcher::DeliverError(int err, const std::string& syscall) {
  auto* message = new Message();
  message->is_error = true;
  message->err = err;
  message->syscall = syscall;
  Deliver(message);
}

void LinkWatcher::CallJs(Napi::Env env, Napi::Function, Context* context, Message* message) {
  std::unique_ptr<Message> owned(message);
  if (env == nullptr || context == nullptr || owned == nullptr || context->closed) return;
  Napi::HandleScope scope(env);
  if (owned->is_error) {
    Napi::Error error = ErrnoError(env, owned->err, owned->syscall, "link watch");
    context->on_error.Call({error.Value()});
    return;
  }
  Napi::Object event = Napi::Object::New(env);
  event.Set("type", Napi::String::New(env, owned->link.deleted ? "del" : "add"));
  event.Set("ifindex", Napi::Number::New(env, owned->link.ifindex));
  event.Set("name", Napi::String::New(env, owned->link.name));
  event.Set("up", Napi::Boolean::New(env, owned->link.up));
  context->on_event.Call({event});
}

Napi::Value LinkWatcher::Close(const Napi::CallbackInfo& info) {
  Stop();
  return info.Env().Undefined();
}

void LinkWatcher::OnEnvCleanup(void* arg) {
  auto* self = static_cast<LinkWatcher*>(arg);
  self->cleanup_hook_ = false;  // it is being run; nothing to remove
  self->Stop();
}

void LinkWatcher::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (context_ != nullptr) context_->closed = true;  // drop events already queued
  if (thread_.joinable()) {
    uint64_t one = 1;
    ssize_t written;
    do {
      written = write(wake_fd_, &one, sizeof one);
    } while (written < 0 && errno == EINTR);
    thread_.join();
  }
  if (wake_fd_ >= 0) {
    close(wake_fd_);
    wake_fd_ = -1;
  }
  if (started_) tsfn_.Release();
  if (cleanup_hook_) {
    napi_remove_env_cleanup_hook(env_, &LinkWatcher::OnEnvCleanup, this);
    cleanup_hook_ = false;
  }
}

}  // namespace kbp
