// GpuDevice: the doorbell page (BAR4, docs/gpu.md "The doorbell page"). The
// guest stores the ring's tail in a page the daemon polls, so a doorbell
// costs no trap while the page is polled; trapped accesses reach the same
// words.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "umdev/vendor/gpu/gpu_device.h"

namespace umdev::vendor::gpu {

using namespace regs;  // NOLINT: the register map is this file's vocabulary.

namespace {

std::atomic_ref<uint32_t> PageWord(const Mapping& page, uint32_t offset) {
  return std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(page.data() + offset));
}

}  // namespace

void GpuDevice::CreateDoorbellPage() {
  const auto& poller = options_.doorbell_poller;
  if (poller == nullptr || poller->options().spin.count() <= 0) return;
  // Sealed against resizing: the client maps this fd, and a client that
  // could truncate it would turn the daemon's next poll into a SIGBUS.
  UniqueFd fd(::memfd_create("umdev-gpu-doorbell", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid() || ::ftruncate(fd.get(), kDoorbellPageSize) != 0 ||
      ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    spdlog::warn("gpu: no doorbell page (the trapped doorbell still works): {}",
                 FailErrno("doorbell memfd").error().Describe());
    return;
  }
  auto page = Mapping::Map(fd.get(), 0, kDoorbellPageSize, PROT_READ | PROT_WRITE, MAP_SHARED);
  if (!page) {
    spdlog::warn("gpu: no doorbell page (the trapped doorbell still works): {}",
                 page.error().Describe());
    return;
  }
  doorbell_fd_ = std::move(fd);
  doorbell_page_ = std::move(*page);
}

uint32_t GpuDevice::TailNow() const {
  if ((queue_ctrl_ & kQueueDoorbellPage) == 0) return tail_;
  // Acquire: the entries the guest wrote before its tail are visible.
  return PageWord(doorbell_page_, kDbTail).load(std::memory_order_acquire);
}

void GpuDevice::StoreDoorbellTail(uint32_t value) {
  PageWord(doorbell_page_, kDbTail).store(value, std::memory_order_seq_cst);
}

Result<size_t> GpuDevice::DoorbellAccess(uint64_t offset, std::span<std::byte> read,
                                         std::span<const std::byte> write) {
  const bool is_read = write.empty();
  const size_t size = is_read ? read.size() : write.size();
  if (!doorbell_page_.valid() || size != 4 || offset % 4 != 0 ||
      offset >= kDoorbellPageSize) {
    return Fail(EINVAL, fmt::format("gpu: doorbell page offset {:#x} size {}: bad access "
                                    "(4-byte words)",
                                    offset, size));
  }
  const auto at = static_cast<uint32_t>(offset);
  if (is_read) {
    const uint32_t value = PageWord(doorbell_page_, at).load(std::memory_order_seq_cst);
    std::memcpy(read.data(), &value, 4);
    return size;
  }
  if (at != kDbTail) return size;  // The rest is the device's: writes are dropped.
  uint32_t value = 0;
  std::memcpy(&value, write.data(), 4);
  bool kick = false;
  {
    MutexLock lock(mu_);
    StoreDoorbellTail(value);
    // A trapped store of the tail is a doorbell too (a client that does not
    // map the page still works); not polled, so nothing to activate.
    kick = (queue_ctrl_ & kQueueDoorbellPage) != 0;
  }
  if (kick && attachment_) attachment_->Kick();
  return size;
}

}  // namespace umdev::vendor::gpu
