// EncodeRegionInfo: VFIO_DEVICE_GET_REGION_INFO's reply bytes, capability chain included.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "umdev/mdev_core/device_ops.h"

namespace umdev {

// struct vfio_region_info for region |index| at |offset| (vfio-pci: the region's
// offset in the device fd; vfio-user: its offset in the region fd), followed
// by the capabilities |info| has, each 8-byte aligned and linked by |next|
// (offset from the start of the reply, 0 ends the chain): sparse mmap
// (VFIO_REGION_INFO_CAP_SPARSE_MMAP), then type (VFIO_REGION_INFO_CAP_TYPE).
// With capabilities, VFIO_REGION_INFO_FLAG_CAPS is set. If |argsz| (the size
// the caller offered) cannot hold the chain, only the struct comes back, with
// cap_offset 0 and argsz the size needed, so the caller asks again (the
// kernel's two-step). The reply's argsz is always the full size.
std::vector<std::byte> EncodeRegionInfo(uint32_t index, const RegionInfo& info, uint64_t offset,
                                        uint32_t argsz);

}  // namespace umdev
