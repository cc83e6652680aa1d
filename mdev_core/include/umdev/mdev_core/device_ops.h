// DeviceOps: what a vendor driver implements for one mdev instance (kernel:
// vfio_device_ops), plus the optional migration and dirty-log capabilities.
#pragma once

#include <linux/vfio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"
#include "umdev/mdev_core/dma.h"
#include "umdev/mdev_core/vm.h"

namespace umdev {

// VFIO_DEVICE_GET_INFO.
struct DeviceInfo {
  uint32_t flags = VFIO_DEVICE_FLAGS_PCI;  // VFIO_DEVICE_FLAGS_*
  uint32_t num_regions = VFIO_PCI_NUM_REGIONS;
  uint32_t num_irqs = VFIO_PCI_NUM_IRQS;
};

// One area of a region that the user may mmap (VFIO_REGION_INFO_CAP_SPARSE_MMAP).
struct SparseMmapArea {
  uint64_t offset = 0;
  uint64_t size = 0;
};

// VFIO_REGION_INFO_CAP_TYPE.
struct RegionType {
  uint32_t type = 0;
  uint32_t subtype = 0;
};

// VFIO_DEVICE_GET_REGION_INFO, before encoding (see region_info.h).
struct RegionInfo {
  uint32_t flags = 0;  // VFIO_REGION_INFO_FLAG_{READ,WRITE,MMAP}; CAPS is set by encoding.
  uint64_t size = 0;
  std::vector<SparseMmapArea> sparse_mmap;  // Empty: no sparse-mmap capability.
  std::optional<RegionType> type;           // Empty: no type capability.
  // VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: the BAR holds the MSI-X table and
  // may be mapped whole anyway (the host's interrupt remapping protects it).
  bool msix_mappable = false;
  // Backing for MMAP areas, borrowed from the device for the reply; -1 if none.
  int mmap_fd = -1;
  uint64_t mmap_offset = 0;  // Offset of the region inside |mmap_fd|.
};

// VFIO_DEVICE_GET_IRQ_INFO.
struct IrqInfo {
  uint32_t flags = 0;  // VFIO_IRQ_INFO_*
  uint32_t count = 0;
};

// VFIO_DEVICE_SET_IRQS, validated by the core against the device's IrqInfo
// (see ValidateSetIrqs in irq_set.h) before the device sees it.
struct IrqSet {
  uint32_t flags = 0;  // One VFIO_IRQ_SET_DATA_* and one VFIO_IRQ_SET_ACTION_*.
  uint32_t index = 0;
  uint32_t start = 0;
  uint32_t count = 0;
  std::vector<uint8_t> bools;  // DATA_BOOL: |count| entries.
  std::vector<UniqueFd> fds;   // DATA_EVENTFD: |count| entries; invalid = de-assign.
};

// One per-instance attribute (sysfs: a file in the mdev's directory, as a
// driver's dev_groups add). Names may hold '/' for a group ("vendor/x").
struct DeviceAttribute {
  std::string name;
  bool readable = true;
  bool writable = false;
};

// VFIO_MIG_GET_PRECOPY_INFO (Linux 6.2 uapi; not in Debian 12's headers):
// what the PRE_COPY stream has left to send.
struct PrecopyInfo {
  uint64_t initial_bytes = 0;  // Not yet sent in this saving session.
  uint64_t dirty_bytes = 0;    // Sent, then changed.
};

// VFIO migration v2 (VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE and the data stream).
// Thread-safe. The core computes the path through intermediate states; the
// device implements single arcs only.
class MigrationOps {
 public:
  virtual ~MigrationOps() = default;
  virtual uint64_t flags() const = 0;  // VFIO_MIGRATION_{STOP_COPY,P2P,PRE_COPY}
  virtual vfio_device_mig_state GetState() = 0;
  // One arc of the state machine. Errors put the device in ERROR (kernel).
  virtual Result<void> SetState(vfio_device_mig_state next) = 0;
  virtual Result<uint64_t> GetDataSize() = 0;
  // The saving side's stream; 0 bytes at its end.
  virtual Result<size_t> ReadData(std::span<std::byte> out) = 0;
  // The resuming side's stream.
  virtual Result<size_t> WriteData(std::span<const std::byte> data) = 0;
  // Only asked in PRE_COPY or PRE_COPY_P2P (the core checks). Errors:
  // ENOTTY the device does not report it (the kernel's answer for a driver
  // without the ioctl).
  virtual Result<PrecopyInfo> GetPrecopyInfo() {
    return Fail(ENOTTY, "pre-copy info: not reported by this device");
  }
};

// Device DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_*). Thread-safe.
class DirtyLogOps {
 public:
  virtual ~DirtyLogOps() = default;
  virtual Result<void> Start(std::span<const SparseMmapArea> ranges, uint64_t page_size) = 0;
  virtual Result<void> Stop() = 0;
  virtual Result<std::vector<uint64_t>> ReadAndClear(uint64_t iova, uint64_t size,
                                                     uint64_t page_size) = 0;
};

// What the first open tells the vendor (kernel: vdev->kvm in open_device).
struct OpenContext {
  // The VM the device now serves until its last close; null: no VM known.
  // A vendor may keep it until Close(), not longer: it holds the client's
  // VM fd and pidfd.
  std::shared_ptr<const Vm> vm;
};

// The vendor's device. Thread-safe: the transport serving the device and the
// sysfs tree may call concurrently; the core never holds one of its locks
// while calling in. Destroying the object is the vendor's remove().
class DeviceOps {
 public:
  virtual ~DeviceOps() = default;

  // First open and last close of the device by a user (kernel open_device /
  // close_device). Close() must release everything the user set up: eventfds,
  // pins, migration streams. The core has already enforced the type's
  // VmPolicy and the instance's binding.
  virtual Result<void> Open(const OpenContext& context) {
    (void)context;
    return {};
  }
  virtual void Close() {}

  virtual DeviceInfo GetInfo() = 0;
  // Errors: EINVAL index out of range.
  virtual Result<RegionInfo> GetRegionInfo(uint32_t index) = 0;
  // Returns the bytes done. Errors: EINVAL bad index/offset/size; the
  // device's own (e.g. EIO on a broken device).
  virtual Result<size_t> RegionRead(uint32_t index, uint64_t offset, std::span<std::byte> out) = 0;
  virtual Result<size_t> RegionWrite(uint32_t index, uint64_t offset,
                                     std::span<const std::byte> data) = 0;
  // Errors: EINVAL index out of range.
  virtual Result<IrqInfo> GetIrqInfo(uint32_t index) = 0;
  // |set| is already validated against GetIrqInfo(set.index). The device
  // takes ownership of the eventfds it keeps.
  virtual Result<void> SetIrqs(IrqSet& set) = 0;
  virtual Result<void> Reset() = 0;

  // The core asks the user to release the device so it can be removed
  // (kernel vfio_device_ops.request): signal the REQ interrupt if one is set.
  // |count| is how many times it has asked so far.
  virtual void Request(unsigned count) { (void)count; }

  // Whether the device pins guest pages. Such a device must return its
  // dma_unmap listener, or the core refuses to register it (EINVAL).
  virtual bool pins_pages() const { return false; }
  // Per-instance attributes. Values are text without the trailing newline
  // sysfs shows; the core strips one trailing newline from written values.
  // Callable whether or not the device is open. Errors: ENOENT no such
  // attribute; EACCES reading a write-only or writing a read-only one (the
  // open sysfs refuses); EINVAL a value the attribute does not take; the
  // vendor's own (EBUSY while the device is open, for instance).
  virtual std::vector<DeviceAttribute> Attributes() { return {}; }
  virtual Result<std::string> ReadAttribute(std::string_view name) {
    return Fail(ENOENT, "no attribute " + std::string(name));
  }
  virtual Result<void> WriteAttribute(std::string_view name, std::string_view value) {
    (void)value;
    return Fail(ENOENT, "no attribute " + std::string(name));
  }

  // Optional capabilities; null when absent.
  virtual DmaUnmapListener* dma_unmap_listener() { return nullptr; }
  virtual MigrationOps* migration() { return nullptr; }
  virtual DirtyLogOps* dirty_log() { return nullptr; }
};

}  // namespace umdev
