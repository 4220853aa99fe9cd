#include "bpf_object.h"

#include <bpf/libbpf.h>

#include <cerrno>

#include "addon_data.h"
#include "bpf_map.h"
#include "bpf_program.h"
#include "errors.h"

namespace kbp {

Napi::Function BpfObject::Define(Napi::Env env) {
  return DefineClass(env, "BpfObject",
                     {
                         InstanceAccessor<&BpfObject::GetPath>("path"),
                         InstanceMethod<&BpfObject::Maps>("maps"),
                         InstanceMethod<&BpfObject::Map>("map"),
                         InstanceMethod<&BpfObject::Programs>("programs"),
                         InstanceMethod<&BpfObject::Program>("program"),
                         InstanceMethod<&BpfObject::Close>("close"),
                     });
}

Napi::Value BpfObject::Create(Napi::Env env, const std::string& path, bpf_object* obj,
                              const std::vector<LoadedMap>& maps, const std::vector<LoadedProgram>& programs) {
  // Own the object first, so every failure below still closes it.
  auto resource = std::make_shared<Resource>([obj] { bpf_object__close(obj); });
  Napi::Object wrapper = GetAddonData(env)->bpf_object.New({});
  if (env.IsExceptionPending()) return Napi::Value();
  BpfObject* self = BpfObject::Unwrap(wrapper);
  self->resource_ = resource;
  self->path_ = path;
  for (const LoadedMap& map : maps) {
    Napi::Value value = BpfMap::Create(env, resource, map.fd, map.info, false);
    if (env.IsExceptionPending()) return Napi::Value();
    self->maps_.emplace_back(map.name, Napi::Persistent(value.As<Napi::Object>()));
  }
  for (const LoadedProgram& prog : programs) {
    Napi::Value value = BpfProgram::Create(env, resource, prog.fd, prog.name, prog.info);
    if (env.IsExceptionPending()) return Napi::Value();
    self->programs_.emplace_back(prog.name, Napi::Persistent(value.As<Napi::Object>()));
  }
  return wrapper;
}

BpfObject::BpfObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObject>(info) {}

Napi::Value BpfObject::GetPath(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }

Napi::Value BpfObject::ToArray(Napi::Env env, const Named& named) {
  Napi::Array array = Napi::Array::New(env, named.size());
  for (size_t i = 0; i < named.size(); i++) array.Set(static_cast<uint32_t>(i), named[i].second.Value());
  return array;
}

Napi::Value BpfObject::Find(const Napi::CallbackInfo& info, const Named& named, const char* what) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    Napi::TypeError::New(env, std::string(what) + " name must be a string").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  for (const auto& [entry_name, ref] : named) {
    if (entry_name == name) return ref.Value();
  }
  return ThrowErrno(env, ENOENT, std::string("bpf_object__find_") + what + "_by_name", std::string("no ") + what + " " + name);
}

Napi::Value BpfObject::Maps(const Napi::CallbackInfo& info) { return ToArray(info.Env(), maps_); }

Napi::Value BpfObject::Map(const Napi::CallbackInfo& info) { return Find(info, maps_, "map"); }

Napi::Value BpfObject::Programs(const Napi::CallbackInfo& info) { return ToArray(info.Env(), programs_); }

Napi::Value BpfObject::Program(const Napi::CallbackInfo& info) { return Find(info, programs_, "program"); }

Napi::Value BpfObject::Close(const Napi::CallbackInfo& info) {
  if (resource_) resource_->Close();
  return info.Env().Undefined();
}

}  // namespace kbp
