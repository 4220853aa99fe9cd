#include "program_workers.h"

#include <bpf/bpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace kbp {

TestRunWorker::TestRunWorker(Napi::Env env, Resource::Lease lease, int fd, std::vector<uint8_t> packet,
                             int repeat, uint32_t size_out)
    : PromiseWorker(env, "kbp:prog_test_run"),
      lease_(std::move(lease)),
      fd_(fd),
      packet_(std::move(packet)),
      repeat_(repeat),
      out_(size_out) {}

void TestRunWorker::Work() {
  bpf_test_run_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  opts.data_in = packet_.data();
  opts.data_size_in = static_cast<__u32>(packet_.size());
  opts.data_out = out_.empty() ? nullptr : out_.data();
  opts.data_size_out = static_cast<__u32>(out_.size());
  opts.repeat = repeat_;
  int err = bpf_prog_test_run_opts(fd_, &opts);
  if (err != 0) {
    Fail(err, "bpf_prog_test_run_opts");
    return;
  }
  retval_ = opts.retval;
  duration_ns_ = opts.duration;
  if (opts.data_size_out < out_.size()) out_.resize(opts.data_size_out);
}

Napi::Value TestRunWorker::Result(Napi::Env env) {
  Napi::Object result = Napi::Object::New(env);
  result.Set("retval", Napi::Number::New(env, static_cast<int32_t>(retval_)));
  result.Set("data", Napi::Buffer<uint8_t>::Copy(env, out_.data(), out_.size()));
  result.Set("durationNs", Napi::Number::New(env, duration_ns_));
  return result;
}

TestRunEachWorker::TestRunEachWorker(Napi::Env env, Resource::Lease lease, int fd,
                                     std::vector<std::vector<uint8_t>> packets)
    : PromiseWorker(env, "kbp:prog_test_run_each"), lease_(std::move(lease)), fd_(fd), packets_(std::move(packets)) {}

void TestRunEachWorker::Work() {
  retvals_.reserve(packets_.size());
  durations_ns_.reserve(packets_.size());
  for (auto& packet : packets_) {
    bpf_test_run_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.sz = sizeof opts;
    opts.data_in = packet.data();
    opts.data_size_in = static_cast<__u32>(packet.size());
    opts.repeat = 1;
    int err = bpf_prog_test_run_opts(fd_, &opts);
    if (err != 0) {
      Fail(err, "bpf_prog_test_run_opts", "packet " + std::to_string(retvals_.size()));
      return;
    }
    retvals_.push_back(opts.retval);
    durations_ns_.push_back(opts.duration);
  }
}

Napi::Value TestRunEachWorker::Result(Napi::Env env) {
  Napi::Array retvals = Napi::Array::New(env, retvals_.size());
  Napi::Array durations = Napi::Array::New(env, durations_ns_.size());
  for (size_t i = 0; i < retvals_.size(); i++) {
    retvals.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<int32_t>(retvals_[i])));
    durations.Set(static_cast<uint32_t>(i), Napi::Number::New(env, durations_ns_[i]));
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("retvals", retvals);
  result.Set("durationsNs", durations);
  return result;
}

ProgInfoWorker::ProgInfoWorker(Napi::Env env, uint32_t id) : PromiseWorker(env, "kbp:prog_info"), id_(id) {}

void ProgInfoWorker::Work() {
  int fd = bpf_prog_get_fd_by_id(id_);
  if (fd < 0) {
    Fail(errno, "bpf_prog_get_fd_by_id", "id " + std::to_string(id_));
    return;
  }
  int err = FetchProgInfo(fd, &info_);
  close(fd);
  if (err != 0) Fail(err, "bpf_obj_get_info_by_fd", "id " + std::to_string(id_));
}

Napi::Value ProgInfoWorker::Result(Napi::Env env) { return ProgInfoToJs(env, info_); }

}  // namespace kbp
