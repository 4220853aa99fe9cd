#include "errors.h"

#include <cerrno>
#include <cstring>

namespace kbp {

std::string ErrnoName(int err) {
  if (err == kErrNotSupp) return "ENOTSUPP";
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  return "E" + std::to_string(err);
}

static std::string Describe(int err) {
  if (err == kErrNotSupp) return "Operation not supported by this map or program type";
  const char* desc = strerrordesc_np(err);
  if (desc != nullptr) return desc;
  return "Unknown error " + std::to_string(err);
}

Napi::Error ErrnoError(Napi::Env env, int err, const std::string& syscall,
                       const std::string& detail) {
  if (err < 0) err = -err;
  std::string code = ErrnoName(err);
  std::string message = syscall + ": " + Describe(err) + " (" + code + ")";
  if (!detail.empty()) message += ": " + detail;
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

Napi::Value ThrowErrno(Napi::Env env, int err, const std::string& syscall,
                       const std::string& detail) {
  ErrnoError(env, err, syscall, detail).ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Promise RejectedErrno(Napi::Env env, int err, const std::string& syscall,
                            const std::string& detail) {
  auto deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(ErrnoError(env, err, syscall, detail).Value());
  return deferred.Promise();
}

Napi::Promise RejectedPending(Napi::Env env) {
  auto deferred = Napi::Promise::Deferred::New(env);
  if (env.IsExceptionPending()) {
    deferred.Reject(env.GetAndClearPendingException().Value());
  } else {
    deferred.Reject(Napi::Error::New(env, "kbp native: unexpected N-API failure").Value());
  }
  return deferred.Promise();
}

}  // namespace kbp
