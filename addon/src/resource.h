// A kernel resource (a loaded bpf_object, or a map fd of our own) shared by
// several JS wrappers and used by in-flight workers. close() is explicit and
// deterministic: no new work may start, and the release runs as soon as the
// last in-flight worker is done, so a worker never sees its fd closed (or
// reused by another open) under it. If nobody calls close(), the release runs
// when the last wrapper is garbage collected.
//
// Leases are taken and returned on the JS thread only (workers are created
// and destroyed there), so no locking is needed.
#ifndef KBP_ADDON_RESOURCE_H
#define KBP_ADDON_RESOURCE_H

#include <functional>
#include <memory>

namespace kbp {

class Resource {
 public:
  // A worker's claim on the resource; keeps it open until destroyed.
  class Lease {
   public:
    Lease() = default;
    explicit Lease(std::shared_ptr<Resource> resource);
    ~Lease();
    Lease(Lease&& other) noexcept = default;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    explicit operator bool() const { return resource_ != nullptr; }

   private:
    void Drop();
    std::shared_ptr<Resource> resource_;
  };

  explicit Resource(std::function<void()> release);
  ~Resource();
  Resource(const Resource&) = delete;
  Resource& operator=(const Resource&) = delete;

  bool closed() const { return closed_; }
  void Close();

  // An empty lease when closed.
  static Lease Acquire(const std::shared_ptr<Resource>& resource);

 private:
  void ReleaseIfIdle();

  std::function<void()> release_;
  bool closed_ = false;
  bool released_ = false;
  int leases_ = 0;
};

}  // namespace kbp

#endif  // KBP_ADDON_RESOURCE_H
