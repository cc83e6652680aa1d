// Engine and Slice: the compute engines guest commands run on (Vulkan or CPU)
// and the per-instance device memory every command is confined to.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"

namespace umdev::vendor::gpu {

// One storage-buffer binding of a DISPATCH: the slice range [offset,
// offset + size) appears to the kernel as descriptor |binding| of set 0.
struct BufferBinding {
  uint32_t binding = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
};

// A compute dispatch. The Vulkan engine runs |spirv| (entry point
// |entry_point|); the CPU engine cannot run SPIR-V and instead runs the
// built-in kernel named |entry_point| (builtin_kernels.h), ignoring |spirv|.
struct DispatchCommand {
  std::span<const uint32_t> spirv;
  std::string entry_point;
  std::span<const std::byte> push_constants;
  std::vector<BufferBinding> bindings;
  uint32_t groups_x = 1;
  uint32_t groups_y = 1;
  uint32_t groups_z = 1;
};

// Limits every engine enforces on DISPATCH, so a command is refused the same
// way whichever engine runs it.
inline constexpr size_t kMaxBindings = 8;
inline constexpr size_t kMaxPushConstantBytes = 128;
// Storage buffer offsets and sizes are multiples of this (and of the device's
// own minStorageBufferOffsetAlignment on Vulkan).
inline constexpr uint64_t kWordBytes = 4;

// The device memory of one instance and the commands that act on it. All
// offsets are slice-relative; a range outside [0, size()) fails with EFAULT,
// a malformed argument (misaligned, zero-sized, too many bindings) with
// EINVAL. Nothing a command carries can reach another slice's memory.
//
// Thread-compatible per slice (the instance's queue runs one command at a
// time); different slices of one engine may be used from different threads.
class Slice {
 public:
  virtual ~Slice() = default;

  virtual uint64_t size() const = 0;
  // The file whose bytes [0, size()) are this slice's memory, for a client
  // to mmap as BAR2, or -1 when the engine cannot share it (a Vulkan driver
  // without VK_EXT_external_memory_host). Borrowed: valid while the slice is.
  virtual int memory_fd() const = 0;

  // Host access: the daemon's path for guest<->device COPY and for BAR2.
  // |data| and |out| may be pinned guest memory: a client that truncates it
  // under the copy gets EFAULT (CopyGuestMemory), never a SIGBUS.
  virtual Result<void> Write(uint64_t offset, std::span<const std::byte> data) = 0;
  virtual Result<void> Read(uint64_t offset, std::span<std::byte> out) = 0;

  // Device<->device copy inside the slice. Overlapping ranges: EINVAL.
  virtual Result<void> Copy(uint64_t dst, uint64_t src, uint64_t size) = 0;
  // Repeats the 32-bit |pattern|; |offset| and |size| are multiples of 4.
  virtual Result<void> Fill(uint64_t offset, uint64_t size, uint32_t pattern) = 0;
  // Runs |command| to completion. Unknown kernel on the CPU engine: ENOTSUP.
  virtual Result<void> Dispatch(const DispatchCommand& command) = 0;
};

enum class EngineKind { kVulkan, kCpu };

// One physical compute device (or the host CPU) carved into slices.
// Thread-safe: slices are created, used and destroyed from any thread.
class Engine {
 public:
  virtual ~Engine() = default;

  virtual EngineKind kind() const = 0;
  // "llvmpipe (LLVM 15.0.6, 256 bits)", "cpu (tbb, 16 threads)", ...
  virtual std::string name() const = 0;
  // The device memory slices may take in total, and what is taken now.
  virtual uint64_t memory_capacity() const = 0;
  virtual uint64_t memory_allocated() const = 0;
  // How often the engine abandoned its device and made a fresh one after a
  // command ran past the dispatch timeout or the device was lost (Vulkan).
  virtual uint64_t device_resets() const { return 0; }

  // A zeroed slice of |size| bytes (a multiple of 4, not 0: EINVAL); ENOSPC
  // when the capacity left is smaller. The slice returns its memory when
  // destroyed and may outlive the Engine object.
  virtual Result<std::unique_ptr<Slice>> CreateSlice(uint64_t size) = 0;
};

struct VulkanEngineOptions {
  // Accelerator::index: the loader's device order.
  uint32_t device_index = 0;
  // 0: the size of the heap slices are allocated from.
  uint64_t memory_limit = 0;
  // The longest one submission (a DISPATCH, COPY or FILL) may run: past it
  // the command fails with ETIMEDOUT and the engine resets its device. > 0.
  std::chrono::milliseconds dispatch_timeout{2000};
  // Resets after which the engine gives up: every later command fails with
  // EIO (each reset on llvmpipe leaves the runaway kernel's threads spinning).
  uint32_t max_device_resets = 8;
};

// ENODEV when the loader has no such device or it has no compute queue;
// EINVAL for a dispatch_timeout of 0.
Result<std::shared_ptr<Engine>> CreateVulkanEngine(const VulkanEngineOptions& options);

struct CpuEngineOptions {
  // Device memory the slices may take in total (host RAM, mapped lazily).
  uint64_t memory_limit = uint64_t{1} << 30;
};

Result<std::shared_ptr<Engine>> CreateCpuEngine(const CpuEngineOptions& options);

}  // namespace umdev::vendor::gpu
