// HostGroup, HostContainer, HostDevice: a real PCI function bound to the
// host kernel's vfio-pci, as the passthrough driver serves it
// (docs/passthrough.md): its IOMMU group, one kernel container per client
// session holding that client's DMA mappings, and the device fd whose
// regions, interrupts and reset the client reaches.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mapping.h"
#include "umdev/common/mutex.h"
#include "umdev/common/pci_sysfs.h"
#include "umdev/common/unique_fd.h"
#include "umdev/mdev_core/device_ops.h"
#include "umdev/passthrough/vfio_kernel.h"
#include "umdev/pinning/locked_memory_account.h"

namespace umdev::passthrough {

// An open /dev/vfio/N. Immutable after Open; any thread.
class HostGroup {
 public:
  // Errors: ENODEV |number| has no VFIO group (no function of it is bound
  // to vfio-pci); EBUSY the group is open elsewhere, or not viable (the
  // message names each member still bound to a host driver, as the kernel
  // counts them); the kernel's.
  static Result<std::shared_ptr<HostGroup>> Open(VfioKernel& kernel, const pci::Sysfs& sysfs,
                                                 unsigned number);
  unsigned number() const { return number_; }
  int fd() const { return fd_.get(); }

 private:
  HostGroup(unsigned number, UniqueFd fd) : number_(number), fd_(std::move(fd)) {}
  const unsigned number_;
  const UniqueFd fd_;
};

// One client's kernel container (type1v2) with the group in it: what the
// client maps is mapped for the device, and nothing of another client's.
// Thread-safe.
class HostContainer {
 public:
  // |account|, when set, is charged what the container maps (umdevd's
  // locked_memory_bytes, shared with the type1 backend's pins).
  // Errors: ENOTSUP the kernel has no type1v2; SET_CONTAINER's (EINVAL the
  // group is in another container already); SET_IOMMU's.
  static Result<std::unique_ptr<HostContainer>> Create(
      VfioKernel& kernel, std::shared_ptr<HostGroup> group,
      std::shared_ptr<pinning::LockedMemoryAccount> account = nullptr);
  // Unmaps everything and takes the group out of the container.
  ~HostContainer();
  HostContainer(const HostContainer&) = delete;
  HostContainer& operator=(const HostContainer&) = delete;

  // Maps |request.size| bytes of the client's fd at |request.offset| into
  // this process (MAP_SHARED) and then for the device at |request.iova|.
  // Errors: EINVAL no fd (the client's RAM is not shareable: QEMU needs
  // memory-backend-memfd,share=on), an empty or unaligned range, prot
  // without READ or WRITE; mmap's; ENOMEM the locked-memory limit; the
  // kernel's (EEXIST an overlap); ENOMEM past the account's limit.
  Result<void> Map(DmaMapRequest request) UMDEV_EXCLUDES(mu_);
  // Removes the mappings inside [iova, iova + size), which must not split
  // one (the kernel's EINVAL otherwise); the bytes unmapped.
  Result<uint64_t> Unmap(uint64_t iova, uint64_t size) UMDEV_EXCLUDES(mu_);
  Result<uint64_t> UnmapAll() UMDEV_EXCLUDES(mu_);
  size_t mapping_count() const UMDEV_EXCLUDES(mu_);
  uint64_t mapped_bytes() const UMDEV_EXCLUDES(mu_);

  // The mappings inside [iova, iova + size) as (iova, size) areas, for a
  // dirty bitmap read one mapping at a time (so its size follows what is
  // really mapped, not what a client asks for). Errors: EINVAL the range
  // cuts a mapping (the kernel's rule for a bitmap).
  Result<std::vector<SparseMmapArea>> MappingsWithin(uint64_t iova, uint64_t size) const
      UMDEV_EXCLUDES(mu_);
  Result<void> StartDirtyTracking() { return kernel_.DirtyTracking(container_.get(), true); }
  Result<void> StopDirtyTracking() { return kernel_.DirtyTracking(container_.get(), false); }
  Result<std::vector<uint64_t>> DirtyBitmap(uint64_t iova, uint64_t size, uint64_t page_size) {
    return kernel_.DirtyBitmap(container_.get(), iova, size, page_size);
  }

 private:
  HostContainer(VfioKernel& kernel, std::shared_ptr<HostGroup> group, UniqueFd container,
                std::shared_ptr<pinning::LockedMemoryAccount> account)
      : kernel_(kernel),
        group_(std::move(group)),
        container_(std::move(container)),
        account_(std::move(account)) {}
  // Drops the mapping at |it|, giving its bytes back to the account.
  std::map<uint64_t, Mapping>::iterator EraseLocked(std::map<uint64_t, Mapping>::iterator it)
      UMDEV_REQUIRES(mu_);

  VfioKernel& kernel_;
  const std::shared_ptr<HostGroup> group_;
  const UniqueFd container_;
  const std::shared_ptr<pinning::LockedMemoryAccount> account_;
  mutable Mutex mu_;
  // By IOVA: the client's memory mapped here, as the kernel pins it.
  std::map<uint64_t, Mapping> mappings_ UMDEV_GUARDED_BY(mu_);
  bool attached_ = false;
};

// A device fd of a function bound to vfio-pci. Thread-safe (the kernel
// serializes what needs it).
class HostDevice {
 public:
  // The group must be in a container (the kernel's rule for GET_DEVICE_FD).
  // Errors: the kernel's; ENODEV not a PCI device.
  static Result<std::unique_ptr<HostDevice>> Open(VfioKernel& kernel, const HostGroup& group,
                                                  const std::string& address);

  const DeviceInfo& info() const { return info_; }
  // The kernel's region info with its sparse-mmap and type capabilities;
  // mmappable areas are served with this device fd at the region's offset,
  // so a client maps the real BAR. Errors: EINVAL no such region; the
  // kernel's.
  Result<RegionInfo> Region(uint32_t index);
  Result<size_t> Read(uint32_t index, uint64_t offset, std::span<std::byte> out);
  Result<size_t> Write(uint32_t index, uint64_t offset, std::span<const std::byte> data);
  Result<IrqInfo> Irq(uint32_t index);
  // Hands the set to the kernel as it is: the client's eventfds go into
  // VFIO_DEVICE_SET_IRQS, so interrupts reach the client with no hop
  // through this process.
  Result<void> SetIrqs(IrqSet& set);
  // VFIO_DEVICE_RESET where the kernel can reset the function alone; else
  // a bus reset (VFIO_DEVICE_PCI_HOT_RESET) when every group it would reach
  // is in |held| (the kernel asks for their fds). Errors: EBUSY a device
  // the bus reset would reach is in a group of |in_use| (held by umdevd,
  // used by another client; named); EPERM one in a group umdevd does not
  // hold (named); the kernel's (no bus reset for a function on the root
  // bus: its errno from the hot-reset info, with why).
  // |bus| false: the function's own reset only (ENOTTY without one), when
  // a bus reset would reach a device someone still uses.
  Result<void> Reset(const std::vector<std::shared_ptr<HostGroup>>& held, bool bus = true,
                     const std::vector<unsigned>& in_use = {});
  int fd() const { return fd_.get(); }

 private:
  struct Location {
    uint64_t offset = 0;
    uint64_t size = 0;
  };
  HostDevice(VfioKernel& kernel, UniqueFd fd, DeviceInfo info)
      : kernel_(kernel), fd_(std::move(fd)), info_(info) {}
  Result<Location> Locate(uint32_t index);

  VfioKernel& kernel_;
  const UniqueFd fd_;
  const DeviceInfo info_;
  Mutex mu_;
  std::map<uint32_t, Location> locations_ UMDEV_GUARDED_BY(mu_);  // Region offsets, once asked.
};

// Parses a VFIO_DEVICE_GET_REGION_INFO reply (struct and capability chain).
// Errors: EIO a chain that points outside the reply or loops.
Result<RegionInfo> ParseRegionInfo(std::span<const std::byte> reply, uint64_t* offset);

}  // namespace umdev::passthrough
