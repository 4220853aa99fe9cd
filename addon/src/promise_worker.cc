#include "promise_worker.h"

#include <utility>

#include "errors.h"

namespace kbp {

PromiseWorker::PromiseWorker(Napi::Env env, const char* name)
    : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}

Napi::Promise PromiseWorker::Start() {
  Napi::Promise promise = deferred_.Promise();
  Queue();
  return promise;
}

void PromiseWorker::Fail(int err, std::string syscall, std::string detail) {
  if (err < 0) err = -err;
  if (err == 0) err = EIO;  // a failure without errno is still a failure
  err_ = err;
  syscall_ = std::move(syscall);
  detail_ = std::move(detail);
}

void PromiseWorker::Execute() {
  Work();
  // AsyncWorker routes to OnError only when an error message is set.
  if (err_ != 0) SetError(syscall_.empty() ? "kbp" : syscall_);
}

void PromiseWorker::OnOK() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  Napi::Value value = Result(env);
  if (env.IsExceptionPending()) {
    deferred_.Reject(env.GetAndClearPendingException().Value());
    return;
  }
  deferred_.Resolve(value);
}

void PromiseWorker::OnError(const Napi::Error&) {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  deferred_.Reject(ErrnoError(env, err_, syscall_, detail_).Value());
}

}  // namespace kbp
