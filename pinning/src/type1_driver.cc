// Type1Driver: the factory for Type1Backend.
#include "umdev/pinning/type1_driver.h"

#include <linux/vfio.h>

#include <fmt/format.h>

#include <cerrno>

namespace umdev::pinning {

bool Type1Driver::Supports(uint32_t type) const { return type == VFIO_TYPE1v2_IOMMU; }

Result<std::unique_ptr<IommuBackend>> Type1Driver::Create(uint32_t type) {
  if (!Supports(type)) {
    return Fail(EINVAL, fmt::format("type1: IOMMU type {} is not supported", type));
  }
  return std::make_unique<Type1Backend>(account_, limits_);
}

}  // namespace umdev::pinning
