// Container and AddressSpace: where groups and devices find their IOMMU
// backend (kernel: container.c for the group path, an iommufd IOAS for cdev).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/mdev_core/iommu_backend.h"
#include "umdev/mdev_core/iommu_drivers.h"

namespace umdev {

class Group;
class GroupFile;

// A set of groups sharing one IOMMU backend. Thread-safe.
// Lock order: Group::mu_ before Container::mu_.
class Container : public std::enable_shared_from_this<Container> {
 public:
  // |drivers| must outlive the container.
  explicit Container(const IommuDrivers& drivers) : drivers_(drivers) {}

  // VFIO_CHECK_EXTENSION.
  bool CheckExtension(uint32_t type) const { return drivers_.CheckExtension(type); }
  // VFIO_SET_IOMMU. Only a container holding a group may pick a backend.
  // Errors: EINVAL no group attached, or a backend is already set; ENODEV no
  // driver supports |type|; the driver's own.
  Result<void> SetIommu(uint32_t type) UMDEV_EXCLUDES(mu_);
  // Null until SetIommu() succeeds, and again once the last group leaves.
  std::shared_ptr<IommuBackend> iommu() const UMDEV_EXCLUDES(mu_);
  size_t group_count() const UMDEV_EXCLUDES(mu_);

 private:
  friend class Group;
  friend class GroupFile;
  // Called by Group with its own lock held (hence the lock order).
  void AttachGroup(Group* group) UMDEV_EXCLUDES(mu_);
  // Drops the backend with the last group: the container is deprivileged.
  void DetachGroup(Group* group) UMDEV_EXCLUDES(mu_);

  const IommuDrivers& drivers_;
  mutable Mutex mu_;
  std::vector<Group*> groups_ UMDEV_GUARDED_BY(mu_);  // Not owned; each detaches itself.
  std::shared_ptr<IommuBackend> iommu_ UMDEV_GUARDED_BY(mu_);
};

// The device-centric (cdev) path's address space: a backend a device binds to
// directly, with no group or container. Thread-safe; immutable.
class AddressSpace {
 public:
  // Errors: those of IommuDrivers::Create.
  static Result<std::shared_ptr<AddressSpace>> Create(const IommuDrivers& drivers, uint32_t type);
  const std::shared_ptr<IommuBackend>& iommu() const { return iommu_; }

 private:
  explicit AddressSpace(std::shared_ptr<IommuBackend> iommu) : iommu_(std::move(iommu)) {}
  std::shared_ptr<IommuBackend> iommu_;
};

}  // namespace umdev
