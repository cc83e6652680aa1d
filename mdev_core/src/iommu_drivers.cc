// IommuDrivers: backend kinds by VFIO_SET_IOMMU type.
#include "umdev/mdev_core/iommu_drivers.h"

#include <algorithm>
#include <fmt/format.h>

namespace umdev {

Result<void> IommuDrivers::Register(std::shared_ptr<IommuDriver> driver) {
  if (driver == nullptr) return Fail(EINVAL, "register IOMMU driver: null");
  MutexLock lock(mu_);
  const bool duplicate = std::any_of(drivers_.begin(), drivers_.end(), [&](const auto& d) {
    return d->name() == driver->name();
  });
  if (duplicate) return Fail(EEXIST, fmt::format("IOMMU driver '{}' already registered", driver->name()));
  drivers_.push_back(std::move(driver));
  return {};
}

void IommuDrivers::Unregister(std::string_view name) {
  MutexLock lock(mu_);
  std::erase_if(drivers_, [&](const auto& d) { return d->name() == name; });
}

bool IommuDrivers::CheckExtension(uint32_t type) const {
  MutexLock lock(mu_);
  return std::any_of(drivers_.begin(), drivers_.end(),
                     [&](const auto& d) { return d->Supports(type); });
}

Result<std::unique_ptr<IommuBackend>> IommuDrivers::Create(uint32_t type) const {
  std::shared_ptr<IommuDriver> chosen;
  {
    MutexLock lock(mu_);
    for (const auto& d : drivers_) {
      if (d->Supports(type)) {
        chosen = d;
        break;
      }
    }
  }
  // The driver is called without mu_ held: creating a backend may block.
  if (chosen == nullptr) return Fail(ENODEV, fmt::format("no IOMMU driver supports type {}", type));
  return chosen->Create(type);
}

}  // namespace umdev
