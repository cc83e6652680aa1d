// ScriptedKernel: a VfioKernel whose answers a test sets: group 7 (more if
// a test adds them),
// a device with the info and region replies given, DMA mappings kept in a
// map, and counts of the calls that change state.
#pragma once

#include <sys/eventfd.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "umdev/passthrough/vfio_kernel.h"

namespace umdev::passthrough::testing {

inline UniqueFd AnyFd() { return UniqueFd(eventfd(0, EFD_CLOEXEC)); }

class ScriptedKernel final : public VfioKernel {
 public:
  Result<UniqueFd> OpenContainer() override { return AnyFd(); }
  Result<UniqueFd> OpenGroup(unsigned group) override {
    if (!groups.contains(group)) return Fail(ENOENT, "open /dev/vfio/" + std::to_string(group));
    return AnyFd();
  }
  Result<bool> CheckExtension(int, uint32_t extension) override {
    return extension == VFIO_TYPE1v2_IOMMU && type1v2;
  }
  Result<uint32_t> GroupStatus(int) override { return group_flags; }
  Result<void> SetContainer(int, int) override {
    ++set_container_calls;
    return {};
  }
  Result<void> UnsetContainer(int) override {
    ++unset_container_calls;
    return {};
  }
  Result<void> SetIommu(int, uint32_t) override { return {}; }
  Result<UniqueFd> DeviceFd(int, const std::string&) override { return AnyFd(); }
  Result<vfio_device_info> DeviceInfo(int) override { return device_info; }
  Result<std::vector<std::byte>> RegionInfo(int, uint32_t index) override {
    return region_replies.at(index);
  }
  Result<vfio_irq_info> IrqInfo(int, uint32_t index) override {
    return vfio_irq_info{sizeof(vfio_irq_info), VFIO_IRQ_INFO_EVENTFD, index, 1};
  }
  Result<void> SetIrqs(int, const vfio_irq_set& header, std::span<const std::byte> data) override {
    ++set_irqs_calls;
    last_irq_index = header.index;
    last_irq_count = header.count;
    last_irq_data.assign(data.begin(), data.end());
    return {};
  }
  Result<void> Reset(int) override {
    ++resets;
    return {};
  }
  Result<std::vector<vfio_pci_dependent_device>> HotResetInfo(int) override {
    if (hot_reset_error != 0) return Fail(hot_reset_error, "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO");
    return hot_reset_devices;
  }
  Result<void> HotReset(int, std::span<const int32_t> group_fds) override {
    hot_reset_group_fds.assign(group_fds.begin(), group_fds.end());
    ++hot_resets;
    return {};
  }
  Result<size_t> Read(int, uint64_t offset, std::span<std::byte> out) override {
    last_offset = offset;
    return out.size();
  }
  Result<size_t> Write(int, uint64_t offset, std::span<const std::byte> data) override {
    last_offset = offset;
    return data.size();
  }
  Result<void> MapDma(int, uint64_t vaddr, uint64_t iova, uint64_t size, uint32_t) override {
    if (map_error != 0) return Fail(map_error, "VFIO_IOMMU_MAP_DMA");
    if (vaddr == 0) return Fail(EFAULT, "no memory");
    mapped[iova] = size;
    return {};
  }
  Result<uint64_t> UnmapDma(int, uint64_t iova, uint64_t size, uint32_t) override {
    uint64_t bytes = 0;
    for (auto it = mapped.lower_bound(iova); it != mapped.end() && it->first < iova + size;) {
      bytes += it->second;
      it = mapped.erase(it);
    }
    return bytes;
  }
  // type1: a bitmap only while tracking, only in its smallest page.
  Result<void> DirtyTracking(int, bool start) override {
    dirty_tracking = start;
    return {};
  }
  Result<std::vector<uint64_t>> DirtyBitmap(int, uint64_t iova, uint64_t size,
                                            uint64_t page_size) override {
    if (!dirty_tracking || page_size != 4096) return Fail(EINVAL, "VFIO_IOMMU_DIRTY_PAGES");
    last_bitmap_iova = iova;
    std::vector<uint64_t> bitmap = dirty_bitmap;
    bitmap.resize((size / page_size + 63) / 64);
    return bitmap;
  }

  std::set<unsigned> groups = {7};
  bool type1v2 = true;
  uint32_t group_flags = VFIO_GROUP_FLAGS_VIABLE;
  int map_error = 0;
  int set_container_calls = 0;
  int unset_container_calls = 0;
  int resets = 0;
  int hot_resets = 0;
  int hot_reset_error = ENODEV;  // A root-bus function: no bus reset.
  std::vector<vfio_pci_dependent_device> hot_reset_devices;
  std::vector<int32_t> hot_reset_group_fds;
  int set_irqs_calls = 0;
  bool dirty_tracking = false;
  std::vector<uint64_t> dirty_bitmap;  // What the next bitmap read returns.
  uint64_t last_bitmap_iova = 0;
  uint64_t last_offset = 0;
  std::map<uint64_t, uint64_t> mapped;
  vfio_device_info device_info = [] {
    vfio_device_info info{};
    info.argsz = sizeof(info);
    info.flags = VFIO_DEVICE_FLAGS_PCI;
    info.num_regions = 9;
    info.num_irqs = 5;
    return info;
  }();
  std::map<uint32_t, std::vector<std::byte>> region_replies;
  uint32_t last_irq_index = 0;
  uint32_t last_irq_count = 0;
  std::vector<std::byte> last_irq_data;
};

}  // namespace umdev::passthrough::testing
