// Base of every blocking call: Work() runs on a libuv pool thread, the result
// (or an errno error) settles a promise on the JS thread. Subclasses copy
// what they need out of JS values in their constructor: nothing JS-owned is
// touched off the JS thread.
#ifndef KBP_ADDON_PROMISE_WORKER_H
#define KBP_ADDON_PROMISE_WORKER_H

#include <napi.h>

#include <string>

namespace kbp {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  // Queues the worker and returns its promise. The worker deletes itself
  // after settling.
  Napi::Promise Start();

 protected:
  PromiseWorker(Napi::Env env, const char* name);

  // Worker thread. Report failure with Fail() and return.
  virtual void Work() = 0;
  // JS thread, after Work() succeeded. May throw (pending exception).
  virtual Napi::Value Result(Napi::Env env) = 0;

  // err: positive errno (a negative libbpf return is accepted too).
  void Fail(int err, std::string syscall, std::string detail = "");
  bool failed() const { return err_ != 0; }

 private:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& error) override;

  Napi::Promise::Deferred deferred_;
  int err_ = 0;
  std::string syscall_;
  std::string detail_;
};

}  // namespace kbp

#endif  // KBP_ADDON_PROMISE_WORKER_H
