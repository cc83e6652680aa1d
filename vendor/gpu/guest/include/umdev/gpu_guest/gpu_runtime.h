// GpuRuntime: what software next to a gpu slice uses to program it
// (docs/gpu-guest.md): slice memory, uploads and downloads (through the BAR2
// mapping and through ring COPYs), SPIR-V modules, dispatches with bindings
// and push constants, fences waited for by interrupt or by polling, and the
// device's error registers turned into errors that say what they mean.
// Depends only on the programming model (gpu_regs.h) and a Transport.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/gpu_guest/transport.h"
#include "umdev/vendor/gpu/gpu_regs.h"

namespace umdev::gpu_guest {

// A range of the slice's memory.
struct SliceRange {
  uint64_t offset = 0;
  uint64_t size = 0;
};

struct DeviceInfo {
  uint32_t version = 0;              // major << 16 | minor
  uint32_t caps = 0;                 // regs::kCap*
  uint32_t compute_share_permille = 0;
  uint64_t memory = 0;               // MEM_SIZE
  bool runs_any_spirv() const;       // CAPS bit 0 (else built-in kernels only)
  bool slice_mappable() const;       // CAPS bit 2
  bool doorbell_page() const;        // CAPS bit 3
};

struct DeviceCounters {
  uint64_t busy_ns = 0;
  uint64_t commands = 0;
  uint64_t bytes = 0;
  uint64_t errors = 0;
};

// A SPIR-V module loaded into the slice.
struct Module {
  SliceRange code;
};

struct Binding {
  uint32_t binding = 0;
  SliceRange range;
};

struct DispatchSpec {
  std::array<uint32_t, 3> groups{1, 1, 1};
  std::vector<Binding> bindings;
  std::vector<std::byte> push_constants;
  // The same dispatch this many times in one submission (1 .. 63), one
  // fence after the last: how a workload keeps the slice busy between its
  // waits.
  uint32_t repeat = 1;
};

enum class WaitMode {
  kInterrupt,  // Sleep on the fence vector's eventfd.
  kPolling,    // Spin on the fence word in DMA memory.
};

// One thread at a time. Owns its transport; the device is reset on Open
// and left with its queue disabled on destruction.
class GpuRuntime {
 public:
  // Resets the device, checks its ID and version (ENODEV not a umdev gpu,
  // EPROTO a major version it does not know), and sets up the ring (64
  // entries), the fence word, a 1 MiB COPY staging buffer and the MSI-X
  // vectors, with the doorbell page when the device has one.
  static Result<std::unique_ptr<GpuRuntime>> Open(std::unique_ptr<Transport> transport);
  ~GpuRuntime();
  GpuRuntime(const GpuRuntime&) = delete;
  GpuRuntime& operator=(const GpuRuntime&) = delete;

  const DeviceInfo& info() const { return info_; }
  Transport& transport() { return *transport_; }
  Result<DeviceCounters> Counters();

  // Slice memory, first fit. Errors: ENOMEM no room; EINVAL size 0 or an
  // alignment that is not a power of two.
  Result<SliceRange> Allocate(uint64_t size, uint64_t align = 256);
  void Free(const SliceRange& range);

  // Through the BAR2 mapping (or trapped accesses when there is none).
  // Errors: EINVAL |data| longer than |range|.
  Result<void> Upload(const SliceRange& range, std::span<const std::byte> data);
  Result<void> Download(const SliceRange& range, std::span<std::byte> out);
  // Through ring COPYs from and to the DMA staging buffer, 1 MiB at a time.
  Result<void> UploadByCopy(const SliceRange& range, std::span<const std::byte> data);
  Result<void> DownloadByCopy(const SliceRange& range, std::span<std::byte> out);
  Result<void> Fill(const SliceRange& range, uint32_t pattern);

  // Copies |spirv| into slice memory.
  Result<Module> LoadModule(std::span<const uint32_t> spirv);
  void Unload(const Module& module) { Free(module.code); }
  // Runs |entry| of |module| and waits for it. The device's errors come
  // back as the entry's errno with what it means (DeviceError below).
  Result<void> Dispatch(const Module& module, std::string_view entry, const DispatchSpec& spec);

  // How a fence is waited for, and how long at most (ETIMEDOUT).
  void set_wait(WaitMode mode, std::chrono::milliseconds timeout) {
    wait_mode_ = mode;
    timeout_ = timeout;
  }
  // Submits one FENCE and waits for it: every command before it is done.
  Result<void> Sync();
  // Raw ring entries (gpu_regs.h's encoding, at most 63), then a FENCE,
  // waited for: commands the calls above do not make, such as a COPY
  // between guest memory and the slice at IOVAs of the caller's choosing.
  Result<void> Submit(std::span<const vendor::gpu::regs::RingEntry> entries);

 private:
  explicit GpuRuntime(std::unique_ptr<Transport> transport);
  Result<void> Setup();
  // Appends |entries| and a FENCE, rings, and waits for the fence (or the
  // device's error, which is returned and cleared so the queue goes on).
  Result<void> Run(std::span<const std::array<std::byte, 64>> entries, WaitMode mode);
  Result<void> Ring(uint32_t tail);
  Result<void> WaitFence(uint64_t value, WaitMode mode);
  // The device stopped on an error: its errno and what it means; cleared.
  Result<void> TakeDeviceError();
  Result<void> CheckRange(const SliceRange& range, size_t bytes) const;

  std::unique_ptr<Transport> transport_;
  DeviceInfo info_;
  DmaBuffer ring_;     // kRingEntries entries, then the fence word.
  DmaBuffer staging_;  // COPY source and destination in guest memory.
  uint32_t tail_ = 0;
  uint64_t fence_ = 0;  // The last fence value submitted.
  bool polled_tail_ = false;
  WaitMode wait_mode_ = WaitMode::kInterrupt;
  std::chrono::milliseconds timeout_{10'000};
  std::vector<SliceRange> free_;  // Sorted, coalesced.
};

// What an errno in ERROR_CODE means for this device (docs/gpu.md).
std::string_view DeviceErrorMeaning(int code);

}  // namespace umdev::gpu_guest
