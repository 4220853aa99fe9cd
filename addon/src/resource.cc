#include "resource.h"

#include <utility>

namespace kbp {

Resource::Lease::Lease(std::shared_ptr<Resource> resource) : resource_(std::move(resource)) {
  if (resource_) resource_->leases_++;
}

Resource::Lease::~Lease() { Drop(); }

Resource::Lease& Resource::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Drop();
    resource_ = std::move(other.resource_);
  }
  return *this;
}

void Resource::Lease::Drop() {
  if (!resource_) return;
  resource_->leases_--;
  resource_->ReleaseIfIdle();
  resource_.reset();
}

Resource::Resource(std::function<void()> release) : release_(std::move(release)) {}

Resource::~Resource() {
  closed_ = true;
  leases_ = 0;
  ReleaseIfIdle();
}

void Resource::Close() {
  closed_ = true;
  ReleaseIfIdle();
}

Resource::Lease Resource::Acquire(const std::shared_ptr<Resource>& resource) {
  if (!resource || resource->closed_) return Lease();
  return Lease(resource);
}

void Resource::ReleaseIfIdle() {
  if (!closed_ || released_ || leases_ > 0) return;
  released_ = true;
  if (release_) release_();
}

}  // namespace kbp
