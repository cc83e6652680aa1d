// GpuRuntime: the ring, fences, slice memory and errors over a Transport.
#include "umdev/gpu_guest/gpu_runtime.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "umdev/vendor/gpu/gpu_regs.h"

namespace umdev::gpu_guest {
namespace {

using namespace umdev::vendor::gpu::regs;  // NOLINT: the device's programming model.

constexpr uint32_t kRingEntries = 64;
constexpr uint64_t kFenceOffset = kRingEntries * kEntrySize;  // In the ring's DMA buffer.
constexpr size_t kRingBytes = 8192;
constexpr size_t kStagingBytes = size_t{1} << 20;
// Commands in one Run besides its FENCE.
constexpr size_t kMaxBatch = kRingEntries - 1;

using Entry = std::array<std::byte, kEntrySize>;

Entry Encode(const RingEntry& entry) {
  Entry out;
  std::memcpy(out.data(), entry.bytes, kEntrySize);
  return out;
}

std::string_view OpcodeName(uint32_t opcode) {
  switch (opcode) {
    case kOpCopy: return "COPY";
    case kOpFill: return "FILL";
    case kOpDispatch: return "DISPATCH";
    case kOpFence: return "FENCE";
    default: return "entry";
  }
}

}  // namespace

bool DeviceInfo::runs_any_spirv() const { return (caps & kCapSpirv) != 0; }
bool DeviceInfo::slice_mappable() const { return (caps & kCapMmap) != 0; }
bool DeviceInfo::doorbell_page() const { return (caps & kCapDoorbellPage) != 0; }

std::string_view DeviceErrorMeaning(int code) {
  switch (code) {
    case EFAULT: return "an address outside the slice, or guest memory the device cannot reach";
    case EINVAL: return "a malformed entry (opcode, flags, size, alignment or arguments)";
    case ENOTSUP: return "the engine cannot run it (a CPU parent runs its built-in kernels only)";
    case EIO: return "the engine failed, or refuses this tenant's kernels after runaways";
    case ENOMEM: return "the engine ran out of memory";
    case ETIMEDOUT: return "the kernel ran past the parent's dispatch timeout";
    default: return "an error the device did not document";
  }
}

GpuRuntime::GpuRuntime(std::unique_ptr<Transport> transport) : transport_(std::move(transport)) {}

GpuRuntime::~GpuRuntime() { (void)transport_->WriteRegister(kRegQueueCtrl, 0); }

Result<std::unique_ptr<GpuRuntime>> GpuRuntime::Open(std::unique_ptr<Transport> transport) {
  auto runtime = std::unique_ptr<GpuRuntime>(new GpuRuntime(std::move(transport)));
  UMDEV_TRY(runtime->Setup());
  return runtime;
}

Result<void> GpuRuntime::Setup() {
  Transport& t = *transport_;
  UMDEV_TRY(t.Reset());
  UMDEV_ASSIGN_OR_RETURN(const uint32_t id, t.ReadRegister(kRegId));
  if (id != kIdValue) {
    return Fail(ENODEV, fmt::format("{}: ID {:#010x} is not a umdev gpu slice", t.Describe(), id));
  }
  UMDEV_ASSIGN_OR_RETURN(info_.version, t.ReadRegister(kRegVersion));
  if (info_.version >> 16 != kVersionValue >> 16) {
    return Fail(EPROTO, fmt::format("{}: device version {}.{}, this runtime knows {}.x",
                                    t.Describe(), info_.version >> 16, info_.version & 0xffff,
                                    kVersionValue >> 16));
  }
  UMDEV_ASSIGN_OR_RETURN(info_.caps, t.ReadRegister(kRegCaps));
  UMDEV_ASSIGN_OR_RETURN(info_.compute_share_permille, t.ReadRegister(kRegComputeShare));
  UMDEV_ASSIGN_OR_RETURN(const uint32_t low, t.ReadRegister(kRegMemSize));
  UMDEV_ASSIGN_OR_RETURN(const uint32_t high, t.ReadRegister(kRegMemSize + 4));
  info_.memory = uint64_t{high} << 32 | low;
  free_ = {{0, info_.memory}};

  UMDEV_ASSIGN_OR_RETURN(ring_, t.AllocateDma(kRingBytes));
  UMDEV_ASSIGN_OR_RETURN(staging_, t.AllocateDma(kStagingBytes));
  UMDEV_TRY(t.VectorFd(kVectorFence));
  UMDEV_TRY(t.VectorFd(kVectorError));
  polled_tail_ = info_.doorbell_page() && t.doorbell_mapping().size() >= kDoorbellPageSize;
  UMDEV_TRY(t.WriteRegister(kRegQueueBase, static_cast<uint32_t>(ring_.iova)));
  UMDEV_TRY(t.WriteRegister(kRegQueueBase + 4, static_cast<uint32_t>(ring_.iova >> 32)));
  UMDEV_TRY(t.WriteRegister(kRegQueueSize, kRingEntries));
  UMDEV_TRY(t.WriteRegister(kRegQueueCtrl,
                            kQueueEnable | (polled_tail_ ? kQueueDoorbellPage : 0)));
  UMDEV_ASSIGN_OR_RETURN(const uint32_t error, t.ReadRegister(kRegErrorCode));
  if (error != 0) {
    return Fail(static_cast<int>(error),
                fmt::format("{}: the device refused the ring: {}", t.Describe(),
                            DeviceErrorMeaning(static_cast<int>(error))));
  }
  return {};
}

Result<DeviceCounters> GpuRuntime::Counters() {
  const auto read64 = [this](uint32_t offset) -> Result<uint64_t> {
    UMDEV_ASSIGN_OR_RETURN(const uint32_t low, transport_->ReadRegister(offset));
    UMDEV_ASSIGN_OR_RETURN(const uint32_t high, transport_->ReadRegister(offset + 4));
    return uint64_t{high} << 32 | low;
  };
  DeviceCounters counters;
  UMDEV_ASSIGN_OR_RETURN(counters.busy_ns, read64(kRegStatBusyNs));
  UMDEV_ASSIGN_OR_RETURN(counters.commands, read64(kRegStatCommands));
  UMDEV_ASSIGN_OR_RETURN(counters.bytes, read64(kRegStatBytes));
  UMDEV_ASSIGN_OR_RETURN(counters.errors, read64(kRegStatErrors));
  return counters;
}

Result<SliceRange> GpuRuntime::Allocate(uint64_t size, uint64_t align) {
  if (size == 0 || !std::has_single_bit(align)) {
    return Fail(EINVAL, fmt::format("slice allocation of {} bytes aligned to {}", size, align));
  }
  for (size_t i = 0; i < free_.size(); ++i) {
    SliceRange& hole = free_[i];
    const uint64_t start = (hole.offset + align - 1) & ~(align - 1);
    const uint64_t end = hole.offset + hole.size;
    if (start > end || end - start < size) continue;
    const SliceRange taken{start, size};
    const SliceRange before{hole.offset, start - hole.offset};
    const SliceRange after{start + size, end - start - size};
    free_.erase(free_.begin() + static_cast<ptrdiff_t>(i));
    if (after.size != 0) free_.insert(free_.begin() + static_cast<ptrdiff_t>(i), after);
    if (before.size != 0) free_.insert(free_.begin() + static_cast<ptrdiff_t>(i), before);
    return taken;
  }
  return Fail(ENOMEM, fmt::format("no {} bytes left in the slice's {}", size, info_.memory));
}

void GpuRuntime::Free(const SliceRange& range) {
  if (range.size == 0) return;
  auto at = std::lower_bound(free_.begin(), free_.end(), range.offset,
                             [](const SliceRange& r, uint64_t offset) { return r.offset < offset; });
  at = free_.insert(at, range);
  // Coalesce with the neighbours.
  if (at + 1 != free_.end() && at->offset + at->size == (at + 1)->offset) {
    at->size += (at + 1)->size;
    free_.erase(at + 1);
  }
  if (at != free_.begin() && (at - 1)->offset + (at - 1)->size == at->offset) {
    (at - 1)->size += at->size;
    free_.erase(at);
  }
}

Result<void> GpuRuntime::CheckRange(const SliceRange& range, size_t bytes) const {
  if (bytes > range.size || range.offset > info_.memory || range.size > info_.memory - range.offset) {
    return Fail(EINVAL, fmt::format("{} bytes into slice range [{:#x}, +{:#x}) of a {:#x}-byte "
                                    "slice",
                                    bytes, range.offset, range.size, info_.memory));
  }
  return {};
}

Result<void> GpuRuntime::Upload(const SliceRange& range, std::span<const std::byte> data) {
  UMDEV_TRY(CheckRange(range, data.size()));
  const std::span<std::byte> mapped = transport_->slice_mapping();
  if (mapped.size() >= range.offset + data.size()) {
    std::memcpy(mapped.data() + range.offset, data.data(), data.size());
    return {};
  }
  return transport_->WriteSlice(range.offset, data);
}

Result<void> GpuRuntime::Download(const SliceRange& range, std::span<std::byte> out) {
  UMDEV_TRY(CheckRange(range, out.size()));
  const std::span<std::byte> mapped = transport_->slice_mapping();
  if (mapped.size() >= range.offset + out.size()) {
    std::memcpy(out.data(), mapped.data() + range.offset, out.size());
    return {};
  }
  return transport_->ReadSlice(range.offset, out);
}

Result<void> GpuRuntime::UploadByCopy(const SliceRange& range, std::span<const std::byte> data) {
  UMDEV_TRY(CheckRange(range, data.size()));
  for (size_t done = 0; done < data.size(); done += staging_.host.size()) {
    const size_t piece = std::min(staging_.host.size(), data.size() - done);
    std::memcpy(staging_.host.data(), data.data() + done, piece);
    const Entry copy = Encode(RingEntry().U32(kEntryOpcode, kOpCopy).U32(kEntryFlags, kCopySrcGuest)
                                  .U64(kCopySrc, staging_.iova).U64(kCopyDst, range.offset + done)
                                  .U64(kCopySize, piece));
    UMDEV_TRY(Run(std::span(&copy, 1), wait_mode_));
  }
  return {};
}

Result<void> GpuRuntime::DownloadByCopy(const SliceRange& range, std::span<std::byte> out) {
  UMDEV_TRY(CheckRange(range, out.size()));
  for (size_t done = 0; done < out.size(); done += staging_.host.size()) {
    const size_t piece = std::min(staging_.host.size(), out.size() - done);
    const Entry copy = Encode(RingEntry().U32(kEntryOpcode, kOpCopy).U32(kEntryFlags, kCopyDstGuest)
                                  .U64(kCopySrc, range.offset + done).U64(kCopyDst, staging_.iova)
                                  .U64(kCopySize, piece));
    UMDEV_TRY(Run(std::span(&copy, 1), wait_mode_));
    std::memcpy(out.data() + done, staging_.host.data(), piece);
  }
  return {};
}

Result<void> GpuRuntime::Fill(const SliceRange& range, uint32_t pattern) {
  const Entry fill = Encode(RingEntry().U32(kEntryOpcode, kOpFill).U64(kFillOffset, range.offset)
                                .U64(kFillSize, range.size).U32(kFillPattern, pattern));
  return Run(std::span(&fill, 1), wait_mode_);
}

Result<Module> GpuRuntime::LoadModule(std::span<const uint32_t> spirv) {
  if (spirv.empty() || spirv.size_bytes() > kMaxModuleSize) {
    return Fail(EINVAL, fmt::format("a SPIR-V module of {} bytes (1 .. {})", spirv.size_bytes(),
                                    kMaxModuleSize));
  }
  UMDEV_ASSIGN_OR_RETURN(const SliceRange code, Allocate(spirv.size_bytes(), 256));
  if (auto uploaded = Upload(code, std::as_bytes(spirv)); !uploaded) {
    Free(code);
    return std::unexpected(uploaded.error());
  }
  return Module{code};
}

Result<void> GpuRuntime::Dispatch(const Module& module, std::string_view entry,
                                  const DispatchSpec& spec) {
  if (entry.empty() || entry.size() >= kMaxEntryName || entry.find('\0') != entry.npos) {
    return Fail(EINVAL, fmt::format("entry point name of {} bytes (1 .. {}, no NUL)",
                                    entry.size(), kMaxEntryName - 1));
  }
  if (spec.repeat == 0 || spec.repeat > kMaxBatch) {
    return Fail(EINVAL, fmt::format("a dispatch repeated {} times (1 .. {})", spec.repeat,
                                    kMaxBatch));
  }
  // The name at the start of a scratch range, the arguments after it.
  std::vector<std::byte> args(kArgsHeaderSize + spec.bindings.size() * kArgsBindingSize +
                              spec.push_constants.size());
  const uint32_t header[6] = {spec.groups[0], spec.groups[1], spec.groups[2],
                              static_cast<uint32_t>(spec.bindings.size()),
                              static_cast<uint32_t>(spec.push_constants.size()), 0};
  std::memcpy(args.data(), header, sizeof(header));
  for (size_t i = 0; i < spec.bindings.size(); ++i) {
    std::byte* at = args.data() + kArgsHeaderSize + i * kArgsBindingSize;
    const Binding& b = spec.bindings[i];
    std::memcpy(at, &b.binding, 4);
    std::memcpy(at + 8, &b.range.offset, 8);
    std::memcpy(at + 16, &b.range.size, 8);
  }
  if (!spec.push_constants.empty()) {
    std::memcpy(args.data() + kArgsHeaderSize + spec.bindings.size() * kArgsBindingSize,
                spec.push_constants.data(), spec.push_constants.size());
  }
  UMDEV_ASSIGN_OR_RETURN(const SliceRange scratch, Allocate(kMaxEntryName + args.size(), 256));
  std::vector<std::byte> bytes(scratch.size, std::byte{0});
  std::memcpy(bytes.data(), entry.data(), entry.size());
  std::memcpy(bytes.data() + kMaxEntryName, args.data(), args.size());
  Result<void> ran = Upload(scratch, bytes);
  if (ran) {
    const Entry dispatch = Encode(RingEntry().U32(kEntryOpcode, kOpDispatch)
                                      .U64(kDispatchModuleOffset, module.code.offset)
                                      .U32(kDispatchModuleSize, static_cast<uint32_t>(module.code.size))
                                      .U64(kDispatchEntryOffset, scratch.offset)
                                      .U64(kDispatchArgsOffset, scratch.offset + kMaxEntryName));
    const std::vector<Entry> entries(spec.repeat, dispatch);
    ran = Run(entries, wait_mode_);
  }
  Free(scratch);
  return ran;
}

Result<void> GpuRuntime::Sync() { return Run({}, wait_mode_); }

Result<void> GpuRuntime::Submit(std::span<const RingEntry> entries) {
  if (entries.size() > kMaxBatch) {
    return Fail(EINVAL, fmt::format("{} entries in one submission (at most {})", entries.size(),
                                    kMaxBatch));
  }
  std::vector<Entry> encoded;
  encoded.reserve(entries.size());
  for (const RingEntry& entry : entries) encoded.push_back(Encode(entry));
  return Run(encoded, wait_mode_);
}

Result<void> GpuRuntime::Run(std::span<const Entry> entries, WaitMode mode) {
  if (entries.size() > kMaxBatch) {
    return Fail(EINVAL, fmt::format("{} entries in one submission (at most {})", entries.size(),
                                    kMaxBatch));
  }
  // Each Run waits for its fence, so the ring is empty when the next starts.
  const auto put = [this](const Entry& e) {
    std::memcpy(ring_.host.data() + uint64_t{tail_ % kRingEntries} * kEntrySize, e.data(),
                kEntrySize);
    ++tail_;
  };
  for (const Entry& e : entries) put(e);
  const uint64_t value = ++fence_;
  put(Encode(RingEntry().U32(kEntryOpcode, kOpFence)
                 .U32(kEntryFlags, mode == WaitMode::kInterrupt ? kFenceInterrupt : 0)
                 .U64(kFenceIova, ring_.iova + kFenceOffset).U64(kFenceValue, value)));
  // The entries reach the device before the doorbell: the page's tail store
  // is sequentially consistent (it releases them), and WriteRegister orders
  // the memory written before it (Transport's contract).
  UMDEV_TRY(Ring(tail_));
  return WaitFence(value, mode);
}

Result<void> GpuRuntime::Ring(uint32_t tail) {
  if (!polled_tail_) {
    UMDEV_TRY(transport_->WriteRegister(kRegQueueTail, tail));
    return transport_->WriteRegister(kRegDoorbell, 1);
  }
  // The doorbell page's protocol (docs/gpu.md): the tail, a full barrier,
  // and the trapped doorbell only when nobody polls.
  std::byte* page = transport_->doorbell_mapping().data();
  std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(page + kDbTail))
      .store(tail, std::memory_order_seq_cst);
  if (std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(page + kDbPolling))
          .load(std::memory_order_seq_cst) != 0) {
    return {};
  }
  return transport_->WriteRegister(kRegDoorbell, 1);
}

Result<void> GpuRuntime::WaitFence(uint64_t value, WaitMode mode) {
  std::atomic_ref<uint64_t> fence(*reinterpret_cast<uint64_t*>(ring_.host.data() + kFenceOffset));
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  auto next_error_check = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
  for (;;) {
    if (fence.load(std::memory_order_acquire) >= value) return {};
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      UMDEV_TRY(TakeDeviceError());
      return Fail(ETIMEDOUT, fmt::format("{}: fence {} not reached in {} ms", transport_->Describe(),
                                         value, timeout_.count()));
    }
    if (mode == WaitMode::kInterrupt) {
      UMDEV_ASSIGN_OR_RETURN(const int fence_fd, transport_->VectorFd(kVectorFence));
      UMDEV_ASSIGN_OR_RETURN(const int error_fd, transport_->VectorFd(kVectorError));
      pollfd fds[2] = {{fence_fd, POLLIN, 0}, {error_fd, POLLIN, 0}};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      const int ready = ::poll(fds, 2, static_cast<int>(std::clamp<int64_t>(left.count(), 1, 100)));
      uint64_t count = 0;
      if (ready > 0 && (fds[0].revents & POLLIN) != 0) (void)!::read(fence_fd, &count, 8);
      if (ready > 0 && (fds[1].revents & POLLIN) != 0) {
        (void)!::read(error_fd, &count, 8);
        UMDEV_TRY(TakeDeviceError());
      }
      if (ready == 0) UMDEV_TRY(TakeDeviceError());  // A masked error, a lost message.
      continue;
    }
    // Polling: the fence word in memory; the error register (a trapped
    // read) once a millisecond, since a stopped queue never fences.
    if (now >= next_error_check) {
      UMDEV_TRY(TakeDeviceError());
      next_error_check = now + std::chrono::milliseconds(1);
    }
#if defined(__x86_64__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }
}

Result<void> GpuRuntime::TakeDeviceError() {
  UMDEV_ASSIGN_OR_RETURN(const uint32_t code, transport_->ReadRegister(kRegErrorCode));
  if (code == 0) return {};
  UMDEV_ASSIGN_OR_RETURN(const uint32_t index, transport_->ReadRegister(kRegErrorIndex));
  uint32_t opcode = 0;
  std::memcpy(&opcode, ring_.host.data() + uint64_t{index % kRingEntries} * kEntrySize, 4);
  // Skips the failed entry: the queue goes on with the ones after it.
  UMDEV_TRY(transport_->WriteRegister(kRegErrorClear, 1));
  const int errno_value = static_cast<int>(code);
  return Fail(errno_value, fmt::format("{}: {} at ring entry {} failed with {}: {}",
                                       transport_->Describe(), OpcodeName(opcode), index,
                                       ErrnoName(errno_value), DeviceErrorMeaning(errno_value)));
}

}  // namespace umdev::gpu_guest
