// IommuDrivers: the registered IOMMU backend kinds, asked in order at SET_IOMMU.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/mdev_core/iommu_backend.h"

namespace umdev {

// Thread-safe.
class IommuDrivers {
 public:
  // Errors: EEXIST a driver of that name is registered; EINVAL null.
  Result<void> Register(std::shared_ptr<IommuDriver> driver) UMDEV_EXCLUDES(mu_);
  void Unregister(std::string_view name) UMDEV_EXCLUDES(mu_);

  // VFIO_CHECK_EXTENSION: whether some driver supports |type|.
  bool CheckExtension(uint32_t type) const UMDEV_EXCLUDES(mu_);
  // A new backend from the first driver that supports |type|.
  // Errors: ENODEV no driver does (kernel VFIO_SET_IOMMU); the driver's own.
  Result<std::unique_ptr<IommuBackend>> Create(uint32_t type) const UMDEV_EXCLUDES(mu_);

 private:
  mutable Mutex mu_;
  std::vector<std::shared_ptr<IommuDriver>> drivers_ UMDEV_GUARDED_BY(mu_);
};

}  // namespace umdev
