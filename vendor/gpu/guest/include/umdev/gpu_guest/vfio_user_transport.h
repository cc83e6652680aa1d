// VfioUserTransport: the gpu runtime on the host, straight over a slice's
// vfio-user socket with umdev's client library, for test rigs and fast
// tests of the runtime (docs/gpu-guest.md).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "umdev/common/mapping.h"
#include "umdev/common/unique_fd.h"
#include "umdev/gpu_guest/transport.h"
#include "umdev/vfio_user/client.h"

namespace umdev::gpu_guest {

// One thread at a time (the runtime's); the client's own receive thread
// answers the server meanwhile.
class VfioUserTransport final : public Transport {
 public:
  // Connects to |socket_path|, maps BAR2 and the doorbell page where the
  // device lets them be mapped. Errors: the client's (connect, VERSION);
  // ENODEV the device has no BAR0.
  static Result<std::unique_ptr<VfioUserTransport>> Connect(const std::string& socket_path);

  Result<uint32_t> ReadRegister(uint32_t offset) override;
  Result<void> WriteRegister(uint32_t offset, uint32_t value) override;
  std::span<std::byte> slice_mapping() override { return slice_.bytes(); }
  Result<void> ReadSlice(uint64_t offset, std::span<std::byte> out) override;
  Result<void> WriteSlice(uint64_t offset, std::span<const std::byte> data) override;
  std::span<std::byte> doorbell_mapping() override { return doorbell_.bytes(); }
  // Shared memfds the server maps (DMA_MAP with an fd), from IOVA 1 MiB up.
  Result<DmaBuffer> AllocateDma(size_t bytes) override;
  Result<int> VectorFd(uint32_t vector) override;
  Result<void> Reset() override;
  std::string Describe() const override { return "vfio-user " + socket_path_; }

 private:
  VfioUserTransport(std::string socket_path, std::unique_ptr<vfio_user::Client> client)
      : socket_path_(std::move(socket_path)), client_(std::move(client)) {}
  // Maps the first sparse area of |index|, when it has one with an fd.
  Result<Mapping> MapRegion(uint32_t index);

  const std::string socket_path_;
  std::unique_ptr<vfio_user::Client> client_;
  Mapping slice_;
  Mapping doorbell_;
  uint64_t next_iova_ = uint64_t{1} << 20;
  std::vector<UniqueFd> vectors_;  // MSI-X vectors 0 and 1, once enabled.
};

}  // namespace umdev::gpu_guest
