#include "libbpf_log.h"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace kbp {

namespace {

// The verifier log of a big program can be megabytes; keep the end, which is
// where the verifier says why it gave up.
constexpr size_t kCaptureLimit = 256 * 1024;

thread_local LibbpfLogCapture* t_capture = nullptr;

// 0: silent, 1: warnings and info, 2: everything. Read once at install.
int g_stderr_level = 0;

int Print(enum libbpf_print_level level, const char* format, va_list args) {
  bool to_stderr = g_stderr_level >= 2 || (g_stderr_level == 1 && level != LIBBPF_DEBUG);
  if (t_capture == nullptr && !to_stderr) return 0;

  va_list copy;
  va_copy(copy, args);
  char small[512];
  int n = vsnprintf(small, sizeof small, format, copy);
  va_end(copy);
  if (n < 0) return 0;
  std::string line;
  if (static_cast<size_t>(n) < sizeof small) {
    line.assign(small, static_cast<size_t>(n));
  } else {
    line.resize(static_cast<size_t>(n) + 1);
    vsnprintf(line.data(), line.size(), format, args);
    line.resize(static_cast<size_t>(n));
  }
  if (t_capture != nullptr && level != LIBBPF_DEBUG) t_capture->Append(line);
  if (to_stderr) fputs(line.c_str(), stderr);
  return n;
}

}  // namespace

void InstallLibbpfLog() {
  const char* env = getenv("KBP_LIBBPF_DEBUG");
  if (env != nullptr && *env != '\0') g_stderr_level = strcmp(env, "debug") == 0 ? 2 : 1;
  libbpf_set_print(Print);
}

LibbpfLogCapture::LibbpfLogCapture() : previous_(t_capture) { t_capture = this; }

LibbpfLogCapture::~LibbpfLogCapture() { t_capture = previous_; }

void LibbpfLogCapture::Append(const std::string& text) {
  text_ += text;
  if (text_.size() > kCaptureLimit) text_.erase(0, text_.size() - kCaptureLimit);
}

std::string LibbpfLogCapture::Tail(size_t max_lines, size_t max_bytes) const {
  size_t end = text_.size();
  while (end > 0 && (text_[end - 1] == '\n' || text_[end - 1] == ' ')) end--;
  size_t start = end;
  size_t lines = 0;
  while (start > 0 && lines < max_lines && end - start < max_bytes) {
    start--;
    if (text_[start] == '\n') lines++;
  }
  if (start > 0 || (start < text_.size() && text_[start] == '\n')) start++;
  if (start > end) return "";
  return text_.substr(start, end - start);
}

}  // namespace kbp
