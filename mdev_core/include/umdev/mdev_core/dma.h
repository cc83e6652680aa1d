// DMA vocabulary shared by the core, IOMMU backends, transports and vendors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"

namespace umdev {

// Every IOVA operation works in host base pages.
inline constexpr uint64_t kPageSize = 4096;

// Access rights of a mapping or a pin: the bit values of VFIO_DMA_MAP_FLAG_READ
// and VFIO_DMA_MAP_FLAG_WRITE, so wire flags convert without translation.
inline constexpr uint32_t kProtRead = 1u << 0;
inline constexpr uint32_t kProtWrite = 1u << 1;
// Every protection bit a mapping or pin may carry.
inline constexpr uint32_t kProtMask = kProtRead | kProtWrite;

// One DMA_MAP request: guest memory [iova, iova + size) with rights |prot|.
struct DmaMapRequest {
  uint64_t iova = 0;
  uint64_t size = 0;
  uint32_t prot = 0;
  // Guest RAM to mmap(MAP_SHARED) at |offset|. Invalid: the memory is reached
  // only through the container's DmaMessageChannel (vfio-user DMA_READ/WRITE).
  UniqueFd fd;
  uint64_t offset = 0;
};

// The memory behind a DMA_MAP fd must be a file (memfd, tmpfs, hugetlbfs)
// that covers the whole range: a mapping past its end faults (SIGBUS) on
// first touch. A memfd that can be sealed must be sealed against shrinking
// (QEMU's memory-backend-memfd seals by default); one that cannot be sealed
// may still be truncated later, which a backend's copies turn into EFAULT.
// Checked by every IOMMU backend before it maps a client's fd. Errors:
// EINVAL (with which rule), fstat's.
Result<void> CheckGuestMemoryFd(const DmaMapRequest& request);

// The transport's path to guest memory that has no fd (vfio-user spec,
// "DMA Read"/"DMA Write": the server asks the client to copy).
// Thread-safe: called from any thread that performs DMA, with no backend lock held.
class DmaMessageChannel {
 public:
  virtual ~DmaMessageChannel() = default;
  virtual Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) = 0;
  virtual Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) = 0;
};

// The dma_unmap contract (kernel vfio_device_ops.dma_unmap): a device that pins
// guest pages is told, with no lock held, when the user unmaps IOVA it may hold,
// and must unpin every page it holds in the range before returning.
// Called from the thread that performs the unmap (a transport or teardown thread).
class DmaUnmapListener {
 public:
  virtual ~DmaUnmapListener() = default;
  virtual void OnDmaUnmap(uint64_t iova, uint64_t size) = 0;
  // The backend gave up waiting for this listener to unpin [iova, iova + size)
  // and released its pins by force; the device must be treated as broken.
  virtual void OnPinsRevoked(uint64_t iova, uint64_t size) { (void)iova, (void)size; }
};

}  // namespace umdev
