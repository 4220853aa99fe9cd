// libbpf's diagnostics. libbpf prints through one process-wide callback; we
// keep it quiet unless KBP_LIBBPF_DEBUG is set (then warnings and info go to
// stderr; KBP_LIBBPF_DEBUG=debug adds debug lines), and a worker that loads an
// object captures what libbpf says on its own thread, so a verifier rejection
// can be returned inside the error instead of being lost.
#ifndef KBP_ADDON_LIBBPF_LOG_H
#define KBP_ADDON_LIBBPF_LOG_H

#include <string>

namespace kbp {

// Installs the print callback; called once from module init.
void InstallLibbpfLog();

// While alive, libbpf output from the current thread is also appended here.
class LibbpfLogCapture {
 public:
  LibbpfLogCapture();
  ~LibbpfLogCapture();
  LibbpfLogCapture(const LibbpfLogCapture&) = delete;
  LibbpfLogCapture& operator=(const LibbpfLogCapture&) = delete;

  void Append(const std::string& text);
  // The last max_lines lines (at most max_bytes), for an error message.
  std::string Tail(size_t max_lines, size_t max_bytes) const;

 private:
  std::string text_;
  LibbpfLogCapture* previous_;
};

}  // namespace kbp

#endif  // KBP_ADDON_LIBBPF_LOG_H
