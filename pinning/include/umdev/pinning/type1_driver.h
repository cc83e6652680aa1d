// Type1Driver: registers the type1 backend kind with the core's IommuDrivers.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "umdev/common/error.h"
#include "umdev/mdev_core/iommu_backend.h"
#include "umdev/pinning/locked_memory_account.h"
#include "umdev/pinning/type1_backend.h"

namespace umdev::pinning {

// Creates a Type1Backend per container at VFIO_SET_IOMMU, every one charging
// the same LockedMemoryAccount. Only VFIO_TYPE1v2_IOMMU: type1 pins pages for
// v2 containers only (v1's pin_pages is -EACCES).
// Thread-safe: called by the core from any transport thread.
class Type1Driver final : public IommuDriver {
 public:
  // |account| must not be null; |limits| apply to each container separately.
  explicit Type1Driver(std::shared_ptr<LockedMemoryAccount> account, Type1Limits limits = {})
      : account_(std::move(account)), limits_(limits) {}

  std::string_view name() const override { return "type1"; }
  bool Supports(uint32_t type) const override;
  // Errors: EINVAL a type this driver does not support.
  Result<std::unique_ptr<IommuBackend>> Create(uint32_t type) override;

  const std::shared_ptr<LockedMemoryAccount>& account() const { return account_; }

 private:
  const std::shared_ptr<LockedMemoryAccount> account_;
  const Type1Limits limits_;
};

}  // namespace umdev::pinning
