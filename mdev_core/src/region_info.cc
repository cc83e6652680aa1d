// Region info encoding with the kernel's capability-chain layout.
#include "umdev/mdev_core/region_info.h"

#include <cstring>

namespace umdev {
namespace {

constexpr size_t AlignUp8(size_t n) { return (n + 7) & ~size_t{7}; }

template <typename T>
void Put(std::vector<std::byte>& out, size_t at, const T& value) {
  std::memcpy(out.data() + at, &value, sizeof(value));
}

// Appends one capability of |size| bytes at an aligned offset, links the
// previous one to it, and returns its offset.
size_t AddCap(std::vector<std::byte>& out, size_t* previous, uint16_t id, size_t size) {
  const size_t at = AlignUp8(out.size());
  out.resize(at + size);
  const vfio_info_cap_header header{.id = id, .version = 1, .next = 0};
  Put(out, at, header);
  if (*previous != 0) {
    Put(out, *previous + offsetof(vfio_info_cap_header, next), static_cast<uint32_t>(at));
  }
  *previous = at;
  return at;
}

}  // namespace

std::vector<std::byte> EncodeRegionInfo(uint32_t index, const RegionInfo& info, uint64_t offset,
                                        uint32_t argsz) {
  std::vector<std::byte> out(sizeof(vfio_region_info));
  size_t previous = 0;
  if (!info.sparse_mmap.empty()) {
    const size_t areas = info.sparse_mmap.size() * sizeof(vfio_region_sparse_mmap_area);
    const size_t at = AddCap(out, &previous, VFIO_REGION_INFO_CAP_SPARSE_MMAP,
                             sizeof(vfio_region_info_cap_sparse_mmap) + areas);
    Put(out, at + offsetof(vfio_region_info_cap_sparse_mmap, nr_areas),
        static_cast<uint32_t>(info.sparse_mmap.size()));
    for (size_t i = 0; i < info.sparse_mmap.size(); ++i) {
      const vfio_region_sparse_mmap_area area{.offset = info.sparse_mmap[i].offset,
                                              .size = info.sparse_mmap[i].size};
      Put(out, at + sizeof(vfio_region_info_cap_sparse_mmap) + i * sizeof(area), area);
    }
  }
  if (info.type.has_value()) {
    const size_t at =
        AddCap(out, &previous, VFIO_REGION_INFO_CAP_TYPE, sizeof(vfio_region_info_cap_type));
    Put(out, at + offsetof(vfio_region_info_cap_type, type), info.type->type);
    Put(out, at + offsetof(vfio_region_info_cap_type, subtype), info.type->subtype);
  }
  if (info.msix_mappable) {
    // A bare header: the capability carries no data (kernel vfio_pci_core).
    AddCap(out, &previous, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, sizeof(vfio_info_cap_header));
  }
  const bool has_caps = out.size() > sizeof(vfio_region_info);
  const bool fits = out.size() <= argsz;
  vfio_region_info head{};
  head.argsz = static_cast<uint32_t>(out.size());
  head.flags = info.flags | (has_caps ? VFIO_REGION_INFO_FLAG_CAPS : 0);
  head.index = index;
  head.cap_offset = has_caps && fits ? static_cast<uint32_t>(sizeof(vfio_region_info)) : 0;
  head.size = info.size;
  head.offset = offset;
  if (!fits) out.resize(sizeof(vfio_region_info));
  Put(out, 0, head);
  return out;
}

}  // namespace umdev
