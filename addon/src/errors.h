// Errors that carry the kernel's answer: every failure surfaces in JS as an
// Error with `code` (errno name), `errno` (positive) and `syscall` (the libbpf
// call or syscall that failed), so callers branch on codes, never on text.
#ifndef KBP_ADDON_ERRORS_H
#define KBP_ADDON_ERRORS_H

#include <napi.h>

#include <string>

namespace kbp {

// The kernel's ENOTSUPP (524) is not in userspace errno.h, but bpf(2)
// returns it for map operations a map type does not implement.
constexpr int kErrNotSupp = 524;

// "ENOENT" for ENOENT; "ENOTSUPP" for 524; "E<n>" when unknown.
std::string ErrnoName(int err);

// "bpf_map_lookup_elem: Invalid argument (EINVAL): <detail>"
Napi::Error ErrnoError(Napi::Env env, int err, const std::string& syscall,
                       const std::string& detail = "");

// Throws ErrnoError and returns undefined, for `return ThrowErrno(...)`.
Napi::Value ThrowErrno(Napi::Env env, int err, const std::string& syscall,
                       const std::string& detail = "");

// A promise already rejected with ErrnoError, for argument checks of
// promise-returning methods (callers only ever need one error path).
Napi::Promise RejectedErrno(Napi::Env env, int err, const std::string& syscall,
                            const std::string& detail = "");

// A promise rejected with whatever exception is pending (from a failed
// N-API call), or with a generic error if none is.
Napi::Promise RejectedPending(Napi::Env env);

}  // namespace kbp

#endif  // KBP_ADDON_ERRORS_H
