// kbp_native: entry points of the addon. Typed in src/native/binding.ts,
// which is the only module that loads it.
#include <bpf/libbpf.h>
#include <napi.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "abi_table.h"
#include "addon_data.h"
#include "bpf_map.h"
#include "bpf_object.h"
#include "bpf_program.h"
#include "cgroup_workers.h"
#include "errors.h"
#include "libbpf_log.h"
#include "link_list_worker.h"
#include "link_watcher.h"
#include "map_workers.h"
#include "object_loader.h"
#include "program_workers.h"
#include "tc_workers.h"
#include "xdp_workers.h"

namespace kbp {

namespace {

// openObject(path, {pinRoot, maxEntries})
Napi::Value OpenObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_object__open_file";
  if (!info[0].IsString()) return RejectedErrno(env, EINVAL, call, "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string pin_root;
  std::vector<std::pair<std::string, uint32_t>> max_entries;
  if (info[1].IsObject()) {
    Napi::Object opts = info[1].As<Napi::Object>();
    Napi::Value root = opts.Get("pinRoot");
    Napi::Value sizes = opts.Get("maxEntries");
    if (env.IsExceptionPending()) return RejectedPending(env);
    if (root.IsString()) {
      pin_root = root.As<Napi::String>().Utf8Value();
    } else if (!root.IsUndefined()) {
      return RejectedErrno(env, EINVAL, call, "pinRoot must be a string");
    }
    if (sizes.IsObject()) {
      Napi::Object table = sizes.As<Napi::Object>();
      Napi::Array names = table.GetPropertyNames();
      if (env.IsExceptionPending()) return RejectedPending(env);
      for (uint32_t i = 0; i < names.Length(); i++) {
        Napi::Value name = names.Get(i);
        Napi::Value entries = table.Get(name);
        if (env.IsExceptionPending()) return RejectedPending(env);
        double n = entries.IsNumber() ? entries.As<Napi::Number>().DoubleValue() : -1;
        if (!(n >= 1) || n > UINT32_MAX || n != static_cast<double>(static_cast<uint32_t>(n))) {
          return RejectedErrno(env, EINVAL, "bpf_map__set_max_entries",
                               "maxEntries of " + name.ToString().Utf8Value() + " must be a positive integer");
        }
        max_entries.emplace_back(name.ToString().Utf8Value(), static_cast<uint32_t>(n));
      }
    } else if (!sizes.IsUndefined()) {
      return RejectedErrno(env, EINVAL, call, "maxEntries must be an object");
    }
  } else if (!info[1].IsUndefined()) {
    return RejectedErrno(env, EINVAL, call, "options must be an object");
  }
  return (new ObjectLoadWorker(env, std::move(path), std::move(pin_root), std::move(max_entries)))->Start();
}

// openPinnedMap(path)
Napi::Value OpenPinnedMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return RejectedErrno(env, EINVAL, "bpf_obj_get", "path must be a string");
  return (new OpenPinnedMapWorker(env, info[0].As<Napi::String>().Utf8Value()))->Start();
}

// progInfo(id)
Napi::Value ProgInfoById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double id = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(id >= 1) || id > UINT32_MAX || id != static_cast<double>(static_cast<uint32_t>(id))) {
    return RejectedErrno(env, EINVAL, "bpf_prog_get_fd_by_id", "id must be a positive integer");
  }
  return (new ProgInfoWorker(env, static_cast<uint32_t>(id)))->Start();
}

// The (target, prog) arguments of tcAttach and xdpAttach, checked, with the
// program leased for the worker.
struct AttachArgs {
  TcTarget target;
  BpfProgram* prog = nullptr;
  int fd = -1;
  Resource::Lease lease;
};

// Returns an empty value when `out` is filled in, else the rejected promise.
Napi::Value ReadAttachArgs(const Napi::CallbackInfo& info, const char* call, AttachArgs* out) {
  Napi::Env env = info.Env();
  std::string problem = ParseTcTarget(info[0], &out->target);
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (!problem.empty()) return RejectedErrno(env, EINVAL, call, problem);
  out->prog = BpfProgram::FromValue(env, info[1]);
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (out->prog == nullptr) return RejectedErrno(env, EINVAL, call, "prog must be a BpfProgram");
  out->lease = out->prog->Acquire(&out->fd);
  if (!out->lease) return RejectedErrno(env, EBADF, call, "program " + out->prog->info().name + " is closed");
  return Napi::Value();
}

// tcAttach(target, prog)
Napi::Value TcAttach(const Napi::CallbackInfo& info) {
  AttachArgs a;
  Napi::Value rejected = ReadAttachArgs(info, "bpf_tc_attach", &a);
  if (!rejected.IsEmpty()) return rejected;
  return (new TcAttachWorker(info.Env(), std::move(a.target), std::move(a.lease), a.fd))->Start();
}

// tcDetach(target)
Napi::Value TcDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TcTarget target;
  std::string problem = ParseTcTarget(info[0], &target);
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (!problem.empty()) return RejectedErrno(env, EINVAL, "bpf_tc_detach", problem);
  return (new TcDetachWorker(env, std::move(target)))->Start();
}

// tcQuery(target)
Napi::Value TcQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TcTarget target;
  std::string problem = ParseTcTarget(info[0], &target);
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (!problem.empty()) return RejectedErrno(env, EINVAL, "bpf_tc_query", problem);
  return (new TcQueryWorker(env, std::move(target)))->Start();
}

// xdpAttach(target, prog): native mode; the program's name identifies ours.
Napi::Value XdpAttach(const Napi::CallbackInfo& info) {
  AttachArgs a;
  Napi::Value rejected = ReadAttachArgs(info, "bpf_xdp_attach", &a);
  if (!rejected.IsEmpty()) return rejected;
  return (new XdpAttachWorker(info.Env(), std::move(a.target), std::move(a.lease), a.fd, a.prog->info().name))->Start();
}

// xdpDetach(target, progName): removes the device's XDP program only if it has that name.
Napi::Value XdpDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "bpf_xdp_detach";
  TcTarget target;
  std::string problem = ParseTcTarget(info[0], &target);
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (!problem.empty()) return RejectedErrno(env, EINVAL, call, problem);
  if (!info[1].IsString()) return RejectedErrno(env, EINVAL, call, "progName must be a string");
  return (new XdpDetachWorker(env, std::move(target), info[1].As<Napi::String>().Utf8Value()))->Start();
}

// xdpQuery(target)
Napi::Value XdpQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TcTarget target;
  std::string problem = ParseTcTarget(info[0], &target);
  if (env.IsExceptionPending()) return RejectedPending(env);
  if (!problem.empty()) return RejectedErrno(env, EINVAL, "bpf_xdp_query_id", problem);
  return (new XdpQueryWorker(env, std::move(target)))->Start();
}

// listLinks(netns?)
Napi::Value ListLinks(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns;
  if (info[0].IsString()) {
    netns = info[0].As<Napi::String>().Utf8Value();
  } else if (!info[0].IsUndefined() && !info[0].IsNull()) {
    return RejectedErrno(env, EINVAL, "RTM_GETLINK", "netns must be a string");
  }
  return (new LinkListWorker(env, std::move(netns)))->Start();
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), GetAddonData(info.Env())->possible_cpus);
}

// mallocTrim(): hands the malloc heap's free pages back to the kernel (glibc's
// malloc_trim(0)). A burst of allocations, such as the first list of 10k
// objects, leaves freed chunks between live ones that the allocator keeps;
// returns whether any memory was released (false also where there is no glibc).
Napi::Value MallocTrim(const Napi::CallbackInfo& info) {
#if defined(__GLIBC__)
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InstallLibbpfLog();
  auto* data = new AddonData();
  env.SetInstanceData(data);
  // Read once: per-CPU value sizes depend on it and it cannot change while
  // we run.
  data->possible_cpus = libbpf_num_possible_cpus();
  if (data->possible_cpus <= 0) {
    ThrowErrno(env, -data->possible_cpus, "libbpf_num_possible_cpus");
    return exports;
  }
  data->bpf_object = Napi::Persistent(BpfObject::Define(env));
  data->bpf_map = Napi::Persistent(BpfMap::Define(env));
  data->bpf_program = Napi::Persistent(BpfProgram::Define(env));
  data->link_watcher = Napi::Persistent(LinkWatcher::Define(env));

  exports.Set("openObject", Napi::Function::New<OpenObject>(env, "openObject"));
  exports.Set("openPinnedMap", Napi::Function::New<OpenPinnedMap>(env, "openPinnedMap"));
  exports.Set("progInfo", Napi::Function::New<ProgInfoById>(env, "progInfo"));
  exports.Set("tcAttach", Napi::Function::New<TcAttach>(env, "tcAttach"));
  exports.Set("tcDetach", Napi::Function::New<TcDetach>(env, "tcDetach"));
  exports.Set("tcQuery", Napi::Function::New<TcQuery>(env, "tcQuery"));
  exports.Set("xdpAttach", Napi::Function::New<XdpAttach>(env, "xdpAttach"));
  exports.Set("xdpDetach", Napi::Function::New<XdpDetach>(env, "xdpDetach"));
  exports.Set("xdpQuery", Napi::Function::New<XdpQuery>(env, "xdpQuery"));
  exports.Set("listLinks", Napi::Function::New<ListLinks>(env, "listLinks"));
  exports.Set("watchLinks", Napi::Function::New<LinkWatcher::Watch>(env, "watchLinks"));
  exports.Set("layout", Napi::Function::New<Layout>(env, "layout"));
  exports.Set("constants", Napi::Function::New<Constants>(env, "constants"));
  exports.Set("numPossibleCpus", Napi::Function::New<NumPossibleCpus>(env, "numPossibleCpus"));
  exports.Set("mallocTrim", Napi::Function::New<MallocTrim>(env, "mallocTrim"));
  RegisterCgroupFunctions(env, exports);
  return exports;
}

}  // namespace

}  // namespace kbp

static Napi::Object InitKbpNative(Napi::Env env, Napi::Object exports) { return kbp::Init(env, exports); }

NODE_API_MODULE(kbp_native, InitKbpNative)
