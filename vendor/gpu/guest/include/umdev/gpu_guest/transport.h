// Transport: how the gpu runtime reaches one slice (docs/gpu-guest.md):
// BAR0 registers, BAR2 (the slice's memory), the doorbell page, memory the
// device can DMA, and the MSI-X vectors. One implementation talks vfio-user
// to umdevd from the host (vfio_user_transport.h); a guest one uses the
// guest kernel's vfio-pci.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "umdev/common/error.h"

namespace umdev::gpu_guest {

// Memory the device can read and write by DMA: mapped here at |host|, seen
// by the device at |iova|. Lives as long as the transport.
struct DmaBuffer {
  std::span<std::byte> host;
  uint64_t iova = 0;
};

// One thread at a time (the runtime's).
class Transport {
 public:
  virtual ~Transport() = default;

  // BAR0, 4-byte registers. A write reaches the device after every store
  // to DMA memory made before it (a socket message does; an MMIO transport
  // needs a write barrier). Errors: the transport's (EIO, ENODEV...).
  virtual Result<uint32_t> ReadRegister(uint32_t offset) = 0;
  virtual Result<void> WriteRegister(uint32_t offset, uint32_t value) = 0;
  // BAR2 mapped into this process when the device lets it be (CAPS bit 2),
  // else empty: then ReadSlice/WriteSlice, which always work.
  virtual std::span<std::byte> slice_mapping() = 0;
  virtual Result<void> ReadSlice(uint64_t offset, std::span<std::byte> out) = 0;
  virtual Result<void> WriteSlice(uint64_t offset, std::span<const std::byte> data) = 0;
  // BAR4 mapped into this process when the device has a doorbell page
  // (CAPS bit 3), else empty.
  virtual std::span<std::byte> doorbell_mapping() = 0;
  // |bytes| (a multiple of 4 KiB) of DMA memory. Errors: ENOMEM, the
  // transport's.
  virtual Result<DmaBuffer> AllocateDma(size_t bytes) = 0;
  // An eventfd MSI-X vector |vector| signals (0 fence, 1 error), enabled on
  // first use. Errors: EINVAL no such vector; the transport's.
  virtual Result<int> VectorFd(uint32_t vector) = 0;
  // A function reset of the device (VFIO_DEVICE_RESET).
  virtual Result<void> Reset() = 0;
  // What the transport is attached to, for messages ("vfio-user /run/...").
  virtual std::string Describe() const = 0;
};

}  // namespace umdev::gpu_guest
