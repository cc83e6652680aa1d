// VfioPciTransport: the gpu runtime inside a Linux guest, through the guest
// kernel's vfio-pci (docs/gpu-guest.md): the slice is a PCI function bound
// to vfio-pci, its IOMMU group's container maps the runtime's DMA memory
// (the guest's IOMMU, QEMU's intel-iommu, turns each mapping into a
// DMA_MAP to umdevd), BARs are mmapped, MSI-X vectors are eventfds.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "umdev/common/mapping.h"
#include "umdev/common/unique_fd.h"
#include "umdev/gpu_guest/transport.h"

namespace umdev::gpu_guest {

// Where the kernel's files are; tests point these at a scratch tree.
struct VfioPciPaths {
  std::string sysfs = "/sys";
  std::string dev = "/dev";
};

// One thread at a time (the runtime's).
class VfioPciTransport final : public Transport {
 public:
  // Opens |address|'s IOMMU group in a type1v2 container of its own, takes
  // the device fd and maps BAR0 (when the kernel lets it be mapped), BAR2
  // and the doorbell page. Errors, each saying what to do: EINVAL a bad
  // address; ENODEV no such device, or no IOMMU group (the guest needs an
  // IOMMU); EBUSY not bound to vfio-pci, or a group that is not viable;
  // the kernel's errno from each ioctl.
  static Result<std::unique_ptr<VfioPciTransport>> Open(const std::string& address,
                                                        const VfioPciPaths& paths = {});
  ~VfioPciTransport() override;

  Result<uint32_t> ReadRegister(uint32_t offset) override;
  // Orders every earlier store to DMA memory before the register write.
  Result<void> WriteRegister(uint32_t offset, uint32_t value) override;
  std::span<std::byte> slice_mapping() override { return slice_.bytes(); }
  Result<void> ReadSlice(uint64_t offset, std::span<std::byte> out) override;
  Result<void> WriteSlice(uint64_t offset, std::span<const std::byte> data) override;
  std::span<std::byte> doorbell_mapping() override { return doorbell_.bytes(); }
  // Anonymous memory mapped with VFIO_IOMMU_MAP_DMA, from IOVA 1 MiB up.
  // Errors: the kernel's (ENOMEM past RLIMIT_MEMLOCK).
  Result<DmaBuffer> AllocateDma(size_t bytes) override;
  Result<int> VectorFd(uint32_t vector) override;
  // The device's RESET register (the slice has no FLR for
  // VFIO_DEVICE_RESET to use).
  Result<void> Reset() override;
  std::string Describe() const override { return "vfio-pci " + address_; }

 private:
  struct Region {
    uint64_t offset = 0;  // In the device fd.
    uint64_t size = 0;
    uint32_t flags = 0;
  };
  struct DmaMapping {
    Mapping memory;
    uint64_t iova = 0;
  };
  explicit VfioPciTransport(std::string address) : address_(std::move(address)) {}
  Result<void> Attach(const VfioPciPaths& paths);
  Result<Region> RegionInfo(uint32_t index);
  // The whole region mapped when the kernel allows it (no sparse holes
  // over it); an empty Mapping otherwise.
  Result<Mapping> MapRegion(uint32_t index, const Region& region);
  Result<void> Access(const Region& region, uint64_t offset, void* data, size_t size,
                      bool write);

  const std::string address_;
  UniqueFd container_;
  UniqueFd group_;
  UniqueFd device_;
  Region bar0_;
  Region bar2_;
  Mapping registers_;
  Mapping slice_;
  Mapping doorbell_;
  uint64_t next_iova_ = uint64_t{1} << 20;
  std::vector<DmaMapping> dma_;
  std::vector<UniqueFd> vectors_;  // MSI-X vectors 0 and 1, once enabled.
};

}  // namespace umdev::gpu_guest
