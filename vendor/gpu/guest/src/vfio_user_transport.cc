// VfioUserTransport: BAR accesses, BAR maps, DMA memory and MSI-X over
// vfio-user.
#include "umdev/gpu_guest/vfio_user_transport.h"

#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <fmt/format.h>

#include "umdev/vendor/gpu/gpu_regs.h"

namespace umdev::gpu_guest {

namespace regs = umdev::vendor::gpu::regs;

Result<std::unique_ptr<VfioUserTransport>> VfioUserTransport::Connect(
    const std::string& socket_path) {
  UMDEV_ASSIGN_OR_RETURN(auto client, vfio_user::Client::Connect(socket_path));
  auto transport = std::unique_ptr<VfioUserTransport>(
      new VfioUserTransport(socket_path, std::move(client)));
  UMDEV_ASSIGN_OR_RETURN(const auto bar0, transport->client_->GetRegionInfo(VFIO_PCI_BAR0_REGION_INDEX));
  if (bar0.size < regs::kBar0Size) {
    return Fail(ENODEV, fmt::format("{}: BAR0 of {} bytes is not a gpu slice's", socket_path,
                                    bar0.size));
  }
  UMDEV_ASSIGN_OR_RETURN(transport->slice_, transport->MapRegion(VFIO_PCI_BAR2_REGION_INDEX));
  UMDEV_ASSIGN_OR_RETURN(transport->doorbell_,
                         transport->MapRegion(regs::kDoorbellBar));
  return transport;
}

Result<Mapping> VfioUserTransport::MapRegion(uint32_t index) {
  UMDEV_ASSIGN_OR_RETURN(auto info, client_->GetRegionInfo(index));
  if ((info.flags & VFIO_REGION_INFO_FLAG_MMAP) == 0 || !info.fd || !info.sparse_areas ||
      info.sparse_areas->empty()) {
    return Mapping();  // Not mappable: trapped accesses only.
  }
  const vfio_user::SparseArea& area = info.sparse_areas->front();
  return Mapping::Map(info.fd.get(), static_cast<off_t>(info.offset + area.offset), area.size,
                      PROT_READ | PROT_WRITE, MAP_SHARED);
}

Result<uint32_t> VfioUserTransport::ReadRegister(uint32_t offset) {
  uint32_t value = 0;
  UMDEV_ASSIGN_OR_RETURN(const size_t got,
                         client_->RegionRead(VFIO_PCI_BAR0_REGION_INDEX, offset,
                                             std::as_writable_bytes(std::span(&value, 1))));
  if (got != sizeof(value)) return Fail(EIO, fmt::format("register {:#x}: short read", offset));
  return value;
}

Result<void> VfioUserTransport::WriteRegister(uint32_t offset, uint32_t value) {
  return client_->RegionWrite(VFIO_PCI_BAR0_REGION_INDEX, offset,
                              std::as_bytes(std::span(&value, 1)));
}

Result<void> VfioUserTransport::ReadSlice(uint64_t offset, std::span<std::byte> out) {
  UMDEV_ASSIGN_OR_RETURN(const size_t got,
                         client_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, offset, out));
  if (got != out.size()) return Fail(EIO, fmt::format("slice {:#x}: short read", offset));
  return {};
}

Result<void> VfioUserTransport::WriteSlice(uint64_t offset, std::span<const std::byte> data) {
  return client_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, offset, data);
}

Result<DmaBuffer> VfioUserTransport::AllocateDma(size_t bytes) {
  const uint64_t iova = next_iova_;
  UMDEV_ASSIGN_OR_RETURN(const std::span<std::byte> host,
                         client_->AddGuestMemory(iova, bytes, /*share_fd=*/true));
  next_iova_ += (bytes + 0xfffff) & ~uint64_t{0xfffff};  // 1 MiB apart.
  return DmaBuffer{host, iova};
}

Result<int> VfioUserTransport::VectorFd(uint32_t vector) {
  if (vector > regs::kVectorError) return Fail(EINVAL, fmt::format("no MSI-X vector {}", vector));
  if (vectors_.empty()) {
    std::vector<UniqueFd> fds;
    std::vector<int> raw;
    for (uint32_t i = 0; i <= regs::kVectorError; ++i) {
      fds.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!fds.back()) return FailErrno("eventfd");
      raw.push_back(fds.back().get());
    }
    UMDEV_TRY(client_->SetIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, VFIO_IRQ_SET_ACTION_TRIGGER,
                                      raw));
    vectors_ = std::move(fds);
  }
  return vectors_[vector].get();
}

Result<void> VfioUserTransport::Reset() {
  UMDEV_TRY(client_->Reset());
  // A reset disables every interrupt: they are enabled again on next use.
  vectors_.clear();
  return {};
}

}  // namespace umdev::gpu_guest
