// Blocking program calls: BPF_PROG_TEST_RUN and info by id.
#ifndef KBP_ADDON_PROGRAM_WORKERS_H
#define KBP_ADDON_PROGRAM_WORKERS_H

#include <napi.h>

#include <cstdint>
#include <vector>

#include "bpf_info.h"
#include "promise_worker.h"
#include "resource.h"

namespace kbp {

// Runs the program on a packet in the kernel (no device involved) and
// returns its verdict, the packet as the program left it and the kernel's
// average run time per repetition.
class TestRunWorker : public PromiseWorker {
 public:
  TestRunWorker(Napi::Env env, Resource::Lease lease, int fd, std::vector<uint8_t> packet, int repeat,
                uint32_t size_out);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  Resource::Lease lease_;
  int fd_;
  std::vector<uint8_t> packet_;
  int repeat_;
  std::vector<uint8_t> out_;
  uint32_t retval_ = 0;
  uint32_t duration_ns_ = 0;
};

// Runs the program once on each packet, back to back on one thread, and
// returns each verdict and kernel-measured run time. Used by the per-packet
// benchmark: a tc test run rewrites its skb in place, so every sample must be
// a fresh packet with repeat = 1, and looping here rather than in JavaScript
// keeps the event loop and thread hand-offs out of the caches between runs.
class TestRunEachWorker : public PromiseWorker {
 public:
  TestRunEachWorker(Napi::Env env, Resource::Lease lease, int fd, std::vector<std::vector<uint8_t>> packets);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  Resource::Lease lease_;
  int fd_;
  std::vector<std::vector<uint8_t>> packets_;
  std::vector<uint32_t> retvals_;
  std::vector<uint32_t> durations_ns_;
};

// Info of any loaded program by id (e.g. the one tcQuery found).
class ProgInfoWorker : public PromiseWorker {
 public:
  ProgInfoWorker(Napi::Env env, uint32_t id);

 private:
  void Work() override;
  Napi::Value Result(Napi::Env env) override;
  uint32_t id_;
  ProgInfo info_;
};

}  // namespace kbp

#endif  // KBP_ADDON_PROGRAM_WORKERS_H
