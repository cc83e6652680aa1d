// ProbeSession::Mapped: a region's fd mapped as a client maps a BAR.
#include <linux/vfio.h>
#include <sys/mman.h>

#include <fmt/format.h>

#include "umdev/probe/session.h"

namespace umdev::probe {

Result<volatile std::byte*> ProbeSession::Mapped(uint32_t region, uint64_t offset,
                                                 uint64_t width) {
  auto held = region_maps_.find(region);
  const auto inside = [&](const RegionMap& map) {
    return offset >= map.start && width <= map.mapping.size() &&
           offset - map.start <= map.mapping.size() - width;
  };
  if (held == region_maps_.end() || !inside(held->second)) {
    UMDEV_ASSIGN_OR_RETURN(auto info, client_.GetRegionInfo(region));
    if ((info.flags & VFIO_REGION_INFO_FLAG_MMAP) == 0 || !info.fd) {
      return Fail(EINVAL, fmt::format("region {} cannot be mapped (no MMAP flag or no fd)", region));
    }
    // The sparse area holding the range, or the whole region without one.
    std::vector<vfio_user::SparseArea> areas =
        info.sparse_areas.value_or(std::vector<vfio_user::SparseArea>{{0, info.size}});
    const vfio_user::SparseArea* area = nullptr;
    for (const auto& candidate : areas) {
      if (offset >= candidate.offset && width <= candidate.size &&
          offset - candidate.offset <= candidate.size - width) {
        area = &candidate;
      }
    }
    if (area == nullptr) {
      return Fail(EINVAL, fmt::format("region {}: no mappable area holds {} bytes at {:#x}",
                                      region, width, offset));
    }
    UMDEV_ASSIGN_OR_RETURN(Mapping mapping,
                           Mapping::Map(info.fd.get(), static_cast<off_t>(info.offset + area->offset),
                                        area->size, PROT_READ | PROT_WRITE, MAP_SHARED));
    region_maps_[region] = RegionMap{std::move(mapping), area->offset};
    held = region_maps_.find(region);
  }
  return held->second.mapping.data() + (offset - held->second.start);
}

}  // namespace umdev::probe
