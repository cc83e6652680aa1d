// Container: groups sharing one IOMMU backend; AddressSpace: a cdev's backend.
#include "umdev/mdev_core/container.h"

#include <fmt/format.h>

#include <algorithm>

#include "umdev/mdev_core/group.h"

namespace umdev {

Result<void> Container::SetIommu(uint32_t type) {
  std::shared_ptr<IommuDriver> group_driver;
  {
    MutexLock lock(mu_);
    // kernel vfio_ioctl_set_iommu: only adding a group grants the privilege
    // of choosing a backend, and there is no way to change it once chosen.
    if (groups_.empty()) return Fail(EINVAL, "set iommu: the container holds no group");
    if (iommu_ != nullptr) return Fail(EINVAL, "set iommu: a backend is already set");
    // A real group's IOMMU is the backend (the kernel's type1 attaching the
    // group's domain); every group of the container must accept it.
    for (const Group* group : groups_) {
      if (group->iommu_driver() == nullptr) continue;
      if (group_driver != nullptr && group_driver != group->iommu_driver()) {
        return Fail(EINVAL, "set iommu: the container's groups need different IOMMUs");
      }
      group_driver = group->iommu_driver();
    }
    if (group_driver != nullptr && groups_.size() > 1 &&
        std::any_of(groups_.begin(), groups_.end(),
                    [](const Group* group) { return group->iommu_driver() == nullptr; })) {
      return Fail(EINVAL, "set iommu: an emulated group and a real one in one container");
    }
  }
  if (group_driver != nullptr && !group_driver->Supports(type)) {
    return Fail(EINVAL, fmt::format("set iommu: the group's IOMMU ({}) has no type {}",
                                    group_driver->name(), type));
  }
  UMDEV_ASSIGN_OR_RETURN(std::unique_ptr<IommuBackend> backend,
                         group_driver != nullptr ? group_driver->Create(type) : drivers_.Create(type));
  MutexLock lock(mu_);
  // Re-check: the driver ran without mu_ held.
  if (groups_.empty() || iommu_ != nullptr) return Fail(EINVAL, "set iommu: container changed");
  iommu_ = std::move(backend);
  return {};
}

std::shared_ptr<IommuBackend> Container::iommu() const {
  MutexLock lock(mu_);
  return iommu_;
}

size_t Container::group_count() const {
  MutexLock lock(mu_);
  return groups_.size();
}

void Container::AttachGroup(Group* group) {
  MutexLock lock(mu_);
  groups_.push_back(group);
}

void Container::DetachGroup(Group* group) {
  std::shared_ptr<IommuBackend> released;
  {
    MutexLock lock(mu_);
    std::erase(groups_, group);
    if (groups_.empty()) released = std::move(iommu_);
  }
  // Destroying the last reference unmaps everything; done without mu_ held.
  released.reset();
}

Result<std::shared_ptr<AddressSpace>> AddressSpace::Create(const IommuDrivers& drivers,
                                                           uint32_t type) {
  UMDEV_ASSIGN_OR_RETURN(std::unique_ptr<IommuBackend> backend, drivers.Create(type));
  return std::shared_ptr<AddressSpace>(new AddressSpace(std::move(backend)));
}

}  // namespace umdev
