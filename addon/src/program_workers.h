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
