#include "bpf_program.h"

#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "addon_data.h"
#include "errors.h"
#include "pin_worker.h"
#include "program_workers.h"

namespace kbp {

Napi::Function BpfProgram::Define(Napi::Env env) {
  return DefineClass(env, "BpfProgram",
                     {
                         InstanceAccessor<&BpfProgram::GetName>("name"),
                         InstanceAccessor<&BpfProgram::GetFd>("fd"),
                         InstanceAccessor<&BpfProgram::GetInfo>("info"),
                         InstanceMethod<&BpfProgram::TestRun>("testRun"),
                         InstanceMethod<&BpfProgram::TestRunEach>("testRunEach"),
                         InstanceMethod<&BpfProgram::Pin>("pin"),
                     });
}

Napi::Value BpfProgram::Create(Napi::Env env, std::shared_ptr<Resource> resource, int fd,
                               std::string name, const ProgInfo& info) {
  Napi::Object obj = GetAddonData(env)->bpf_program.New({});
  if (env.IsExceptionPending()) return Napi::Value();
  BpfProgram* prog = BpfProgram::Unwrap(obj);
  prog->resource_ = std::move(resource);
  prog->fd_ = fd;
  prog->name_ = std::move(name);
  prog->info_ = info;
  return obj;
}

BpfProgram* BpfProgram::FromValue(Napi::Env env, const Napi::Value& value) {
  if (!value.IsObject()) return nullptr;
  Napi::Object obj = value.As<Napi::Object>();
  if (!obj.InstanceOf(GetAddonData(env)->bpf_program.Value())) return nullptr;
  return BpfProgram::Unwrap(obj);
}

BpfProgram::BpfProgram(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfProgram>(info) {}

Resource::Lease BpfProgram::Acquire(int* fd) const {
  *fd = fd_;
  return Resource::Acquire(resource_);
}

Napi::Value BpfProgram::GetName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }

Napi::Value BpfProgram::GetFd(const Napi::CallbackInfo& info) {
  bool open = resource_ && !resource_->closed();
  return Napi::Number::New(info.Env(), open ? fd_ : -1);
}

Napi::Value BpfProgram::GetInfo(const Napi::CallbackInfo& info) { return ProgInfoToJs(info.Env(), info_); }

Napi::Value BpfProgram::TestRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_prog_test_run_opts";
  if (!info[0].IsObject()) return RejectedErrno(env, EINVAL, call, "options must be an object");
  Napi::Object opts = info[0].As<Napi::Object>();
  Napi::Value data = opts.Get("data");
  Napi::Value repeat_value = opts.Get("repeat");
  Napi::Value size_value = opts.Get("dataSizeOut");
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (!data.IsBuffer()) return RejectedErrno(env, EINVAL, call, "data must be a Buffer");
  auto buffer = data.As<Napi::Buffer<uint8_t>>();
  std::vector<uint8_t> packet(buffer.Data(), buffer.Data() + buffer.Length());

  int64_t repeat = 1;
  if (!repeat_value.IsUndefined()) {
    if (!repeat_value.IsNumber()) return RejectedErrno(env, EINVAL, call, "repeat must be a number");
    repeat = repeat_value.As<Napi::Number>().Int64Value();
    if (repeat < 1 || repeat > INT32_MAX) return RejectedErrno(env, EINVAL, call, "repeat must be >= 1");
  }
  int64_t size_out = static_cast<int64_t>(packet.size()) + 256;
  if (!size_value.IsUndefined()) {
    if (!size_value.IsNumber()) return RejectedErrno(env, EINVAL, call, "dataSizeOut must be a number");
    size_out = size_value.As<Napi::Number>().Int64Value();
    if (size_out < 0 || size_out > UINT32_MAX) return RejectedErrno(env, EINVAL, call, "dataSizeOut out of range");
  }
  if (packet.size() > UINT32_MAX) return RejectedErrno(env, EINVAL, call, "data too large");

  int fd;
  Resource::Lease lease = Acquire(&fd);
  if (!lease) return RejectedErrno(env, EBADF, call, "program " + name_ + " is closed");
  return (new TestRunWorker(env, std::move(lease), fd, std::move(packet), static_cast<int>(repeat),
                            static_cast<uint32_t>(size_out)))
      ->Start();
}

Napi::Value BpfProgram::TestRunEach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_prog_test_run_opts";
  if (!info[0].IsArray()) return RejectedErrno(env, EINVAL, call, "packets must be an array of Buffers");
  Napi::Array list = info[0].As<Napi::Array>();
  std::vector<std::vector<uint8_t>> packets;
  packets.reserve(list.Length());
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value v = list.Get(i);
    if (env.IsExceptionPending()) return RejectedPending(env);
    if (!v.IsBuffer()) return RejectedErrno(env, EINVAL, call, "packet " + std::to_string(i) + " is not a Buffer");
    auto buffer = v.As<Napi::Buffer<uint8_t>>();
    if (buffer.Length() > UINT32_MAX) return RejectedErrno(env, EINVAL, call, "packet too large");
    packets.emplace_back(buffer.Data(), buffer.Data() + buffer.Length());
  }
  int fd;
  Resource::Lease lease = Acquire(&fd);
  if (!lease) return RejectedErrno(env, EBADF, call, "program " + name_ + " is closed");
  return (new TestRunEachWorker(env, std::move(lease), fd, std::move(packets)))->Start();
}

Napi::Value BpfProgram::Pin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_obj_pin";
  if (!info[0].IsString()) return RejectedErrno(env, EINVAL, call, "path must be a string");
  int fd;
  Resource::Lease lease = Acquire(&fd);
  if (!lease) return RejectedErrno(env, EBADF, call, "program " + name_ + " is closed");
  return (new PinWorker(env, std::move(lease), fd, info[0].As<Napi::String>().Utf8Value()))->Start();
}

}  // namespace kbp
