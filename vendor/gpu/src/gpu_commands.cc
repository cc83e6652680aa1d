// GpuDevice: the command ring (RunOne) and the execution of each entry.
#include <algorithm>
#include <array>
#include <cstring>
#include <string>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "umdev/vendor/gpu/guest_pin_cache.h"
#include "slice_bounds.h"
#include "umdev/mdev_core/dma.h"
#include "umdev/vendor/gpu/gpu_device.h"

namespace umdev::vendor::gpu {
namespace {

using namespace regs;  // NOLINT: the descriptor layout is this file's vocabulary.

template <typename T>
T Load(const std::byte* at) {
  T value;
  std::memcpy(&value, at, sizeof(T));  // x86-64 and the wire are little-endian.
  return value;
}

}  // namespace

std::optional<CommandCost> GpuDevice::RunOne() { return RunPiece(false); }

std::optional<CommandCost> GpuDevice::RunPiece(bool finish_in_flight) {
  EntryInFlight current;
  bool resumed = false;
  bool prefetched = false;  // A fresh entry found among those read ahead.
  uint64_t entry_iova = 0;  // Where a fresh entry is read from...
  uint32_t read_count = 1;  // ...with how many entries after it, in one read.
  uint64_t ring_epoch = 0;
  {
    MutexLock lock(mu_);
    const bool runnable = (queue_ctrl_ & kQueueEnable) != 0 && error_code_ == 0;
    if (in_flight_ && (!runnable || in_flight_->generation != generation_ ||
                       in_flight_->index != head_)) {
      in_flight_.reset();
    }
    if (finish_in_flight) {
      if (!in_flight_) return std::nullopt;
    } else if (quiesced_ || !runnable || head_ == TailNow()) {
      return std::nullopt;
    }
    if (in_flight_) {
      current = *in_flight_;
      resumed = true;
    } else {
      if (TailNow() - head_ > queue_size_) {
        SetError(EINVAL, head_, false);  // TAIL ran more than a ring ahead.
        cv_.NotifyAll();
        return CommandCost{.failed = true};
      }
      current.index = head_;
      current.generation = generation_;
      if (prefetched_ && head_ - prefetched_->first < prefetched_->count) {
        std::memcpy(current.bytes.data(),
                    prefetched_->bytes.data() + (head_ - prefetched_->first) * kEntrySize,
                    kEntrySize);
        prefetched = true;
      } else {
        entry_iova = queue_base_ + uint64_t{head_ % queue_size_} * kEntrySize;
        // Published entries up to the ring's end, at most kPrefetchEntries.
        read_count = std::min({kPrefetchEntries, TailNow() - head_,
                               queue_size_ - head_ % queue_size_});
        ring_epoch = ring_epoch_;
      }
    }
    running_ = true;
  }
  const auto start = std::chrono::steady_clock::now();
  bool finished = true;
  Result<uint64_t> moved = 0;
  if (!resumed) {
    {
      MutexLock lock(unmap_mu_);
      unmapped_.clear();
    }
    if (!prefetched) moved = ReadEntries(entry_iova, read_count, current, ring_epoch);
  }
  if (moved.has_value()) {
    moved = Execute(current.bytes.data(), current.generation, current.done, finished);
  }
  const auto busy = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::steady_clock::now() - start);
  MarkEntryDirty(current.bytes.data(), current.done, moved.value_or(0), !moved.has_value());
  CommandCost cost{.busy = busy, .bytes = moved.value_or(0), .failed = !moved.has_value(),
                   .partial = moved.has_value() && !finished};
  MutexLock lock(mu_);
  running_ = false;
  cv_.NotifyAll();
  if (current.generation != generation_) return cost;  // Reset meanwhile: no trace.
  stats_.busy += busy;
  const std::byte* entry = current.bytes.data();
  if (!moved.has_value()) {
    in_flight_.reset();
    SetError(moved.error().code, current.index, true);
    return cost;
  }
  stats_.bytes += *moved;
  if (!finished) {
    current.done += *moved;
    in_flight_ = current;
    return cost;
  }
  in_flight_.reset();
  ++head_;
  ++stats_.commands;
  if (Load<uint32_t>(entry + kEntryOpcode) == kOpFence) {
    fence_done_ = Load<uint64_t>(entry + kFenceValue);
    if ((Load<uint32_t>(entry + kEntryFlags) & kFenceInterrupt) != 0) {
      RaiseCause(kIntFence);
      // A guest woken by a fence tends to submit again soon: have the page
      // polled, so that its next doorbell needs no trap.
      if ((queue_ctrl_ & kQueueDoorbellPage) != 0) doorbell_watch_->Activate();
    }
  }
  return cost;
}

Result<uint64_t> GpuDevice::ReadEntries(uint64_t iova, uint32_t count, EntryInFlight& current,
                                        uint64_t ring_epoch) {
  std::array<std::byte, kPrefetchEntries * kEntrySize> batch;
  if (count > 1 && dma_.DmaRead(iova, std::span(batch).first(count * kEntrySize)).has_value()) {
    std::memcpy(current.bytes.data(), batch.data(), kEntrySize);
    MutexLock lock(mu_);
    if (ring_epoch_ == ring_epoch) {
      prefetched_ = Prefetched{.first = current.index, .count = count, .bytes = batch};
    }
    return 0;
  }
  // This entry alone: a read of several fails when any of them is
  // unreadable, and only this one's failure is this entry's.
  if (!dma_.DmaRead(iova, current.bytes).has_value()) {
    return Fail(EFAULT, "gpu: ring entry unreadable");
  }
  return 0;
}

void GpuDevice::MarkEntryDirty(const std::byte* entry, uint64_t done, uint64_t moved,
                               bool failed) {
  const auto opcode = Load<uint32_t>(entry + kEntryOpcode);
  const auto flags = Load<uint32_t>(entry + kEntryFlags);
  uint64_t offset = 0;
  uint64_t size = 0;
  if (opcode == kOpFill) {
    offset = Load<uint64_t>(entry + kFillOffset);
    size = Load<uint64_t>(entry + kFillSize);
  } else if (opcode == kOpCopy && (flags & kCopyDstGuest) == 0) {
    offset = Load<uint64_t>(entry + kCopyDst);
    size = Load<uint64_t>(entry + kCopySize);
  } else if (opcode == kOpDispatch) {
    size = slice_->size();  // Bindings are not tracked one by one.
  } else {
    return;
  }
  // This piece, or on a failure everything from it on.
  if (done >= size) return;
  const uint64_t bytes = failed ? size - done : std::min(moved, size - done);
  MutexLock exec(exec_mu_);
  MarkSliceDirty(offset + done, bytes);
}

Result<void> GpuDevice::CheckGeneration(uint64_t generation) {
  MutexLock lock(mu_);
  if (generation != generation_) return Fail(ECANCELED, "gpu: reset under the command");
  return {};
}

Result<uint64_t> GpuDevice::Execute(const std::byte* entry, uint64_t generation, uint64_t done,
                                    bool& finished) {
  finished = true;
  const auto opcode = Load<uint32_t>(entry + kEntryOpcode);
  switch (opcode) {
    case kOpCopy:
      return ExecuteCopy(entry, generation, done, finished);
    case kOpFill:
      return ExecuteFill(entry, generation, done, finished);
    case kOpDispatch:
      return ExecuteDispatch(entry, generation);
    case kOpFence: {
      const auto iova = Load<uint64_t>(entry + kFenceIova);
      if (iova % 8 != 0) return Fail(EINVAL, "gpu: FENCE address not 8-aligned");
      std::byte value[8];
      std::memcpy(value, entry + kFenceValue, 8);
      // Every earlier entry is complete: entries run one at a time.
      UMDEV_TRY(dma_.DmaWrite(iova, value));
      return 0;
    }
    default:
      return Fail(EINVAL, fmt::format("gpu: unknown opcode {}", opcode));
  }
}

// The whole command is checked at every piece, so a bad one fails at its
// first and never runs in part.
Result<uint64_t> GpuDevice::ExecuteFill(const std::byte* entry, uint64_t generation,
                                        uint64_t done, bool& finished) {
  const auto offset = Load<uint64_t>(entry + kFillOffset);
  const auto size = Load<uint64_t>(entry + kFillSize);
  UMDEV_TRY(CheckFill(slice_->size(), offset, size));
  const uint64_t piece = std::min(size - done, kPieceBytes);
  MutexLock exec(exec_mu_);
  UMDEV_TRY(CheckGeneration(generation));
  UMDEV_TRY(slice_->Fill(offset + done, piece, Load<uint32_t>(entry + kFillPattern)));
  finished = done + piece == size;
  return piece;
}

Result<uint64_t> GpuDevice::ExecuteCopy(const std::byte* entry, uint64_t generation,
                                        uint64_t done, bool& finished) {
  const auto flags = Load<uint32_t>(entry + kEntryFlags);
  const auto src = Load<uint64_t>(entry + kCopySrc);
  const auto dst = Load<uint64_t>(entry + kCopyDst);
  const auto size = Load<uint64_t>(entry + kCopySize);
  const bool src_guest = (flags & kCopySrcGuest) != 0;
  const bool dst_guest = (flags & kCopyDstGuest) != 0;
  if ((flags & ~(kCopySrcGuest | kCopyDstGuest)) != 0) return Fail(EINVAL, "gpu: COPY flags");
  if (src_guest && dst_guest) return Fail(EINVAL, "gpu: COPY guest to guest");
  if (size == 0) return Fail(EINVAL, "gpu: COPY of 0 bytes");
  const uint64_t piece = std::min(size - done, kPieceBytes);
  if (src_guest || dst_guest) {
    const uint64_t iova = src_guest ? src : dst;
    const uint64_t offset = src_guest ? dst : src;
    UMDEV_TRY(CheckRange(slice_->size(), offset, size,
                         src_guest ? "COPY destination" : "COPY source"));
    if (iova + size < iova) return Fail(EFAULT, "gpu: guest range wraps");
    UMDEV_TRY(CopyGuest(iova + done, offset + done, piece, src_guest, generation));
  } else {
    UMDEV_TRY(CheckCopy(slice_->size(), dst, src, size));
    MutexLock exec(exec_mu_);
    UMDEV_TRY(CheckGeneration(generation));
    UMDEV_TRY(slice_->Copy(dst + done, src + done, piece));
  }
  finished = done + piece == size;
  return piece;
}

// Moves guest [iova, iova + size) to or from slice [offset, offset + size),
// one host-contiguous run of pinned pages at a time. The pins come from the
// pin cache, which the dma_unmap listener empties of the range under
// exec_mu_: an unmap waits for the run being copied, and a later run finds
// the range in unmapped_ and fails with EFAULT, so no byte goes to or comes
// from memory the guest no longer maps. Memory without an fd (message DMA)
// cannot be pinned; it is copied with dma_rw through a bounce buffer. The
// caller has checked the whole command's guest range does not wrap.
Result<void> GpuDevice::CopyGuest(uint64_t iova, uint64_t offset, uint64_t size, bool to_slice,
                                  uint64_t generation) {
  const uint32_t prot = to_slice ? kProtRead : kProtWrite;
  std::vector<std::byte> bounce;
  uint64_t done = 0;
  while (done < size) {
    const uint64_t at = iova + done;
    const uint64_t page = at & ~(kPageSize - 1);
    // At most the rest of at's pin block: what one Find() may return.
    const uint64_t block_end = (at | (GuestPinCache::kBlockBytes - 1)) + 1;
    const uint64_t span = std::min(size - done, block_end - at);
    {
      MutexLock exec(exec_mu_);
      UMDEV_TRY(CheckGeneration(generation));
      UMDEV_TRY(CheckNotUnmapped(page, at + span - page));
      auto host = pin_cache_->Find(at, span, prot);
      if (host.has_value()) {
        UMDEV_TRY(to_slice ? slice_->Write(offset + done, *host)
                           : slice_->Read(offset + done, *host));
        done += host->size();
        continue;
      }
      if (host.error().code != EFAULT) return std::unexpected(host.error());
      if (!to_slice) {
        bounce.resize(span);
        UMDEV_TRY(slice_->Read(offset + done, bounce));
      }
    }
    // Fd-less memory (message DMA) cannot be pinned: bounce through dma_rw,
    // with no lock held, as the copy may be a round trip to the client.
    if (to_slice) {
      bounce.resize(span);
      UMDEV_TRY(dma_.DmaRead(at, bounce));
      MutexLock exec(exec_mu_);
      UMDEV_TRY(CheckGeneration(generation));
      UMDEV_TRY(slice_->Write(offset + done, bounce));
    } else {
      UMDEV_TRY(dma_.DmaWrite(at, bounce));
    }
    done += span;
  }
  return {};
}

Result<uint64_t> GpuDevice::ExecuteDispatch(const std::byte* entry, uint64_t generation) {
  const uint64_t slice_size = slice_->size();
  const auto module_offset = Load<uint64_t>(entry + kDispatchModuleOffset);
  const auto module_size = Load<uint32_t>(entry + kDispatchModuleSize);
  const auto entry_offset = Load<uint64_t>(entry + kDispatchEntryOffset);
  const auto args_offset = Load<uint64_t>(entry + kDispatchArgsOffset);
  if (module_size % 4 != 0 || module_size > kMaxModuleSize) {
    return Fail(EINVAL, fmt::format("gpu: DISPATCH module of {} bytes", module_size));
  }
  UMDEV_TRY(CheckRange(slice_size, module_offset, module_size, "DISPATCH module"));
  UMDEV_TRY(CheckRange(slice_size, entry_offset, 1, "DISPATCH entry name"));
  UMDEV_TRY(CheckRange(slice_size, args_offset, kArgsHeaderSize, "DISPATCH arguments"));

  if (runaway_kernels_.load() >= kMaxRunawayKernels) {
    return Fail(EIO, fmt::format("gpu: DISPATCH refused: {} kernels of this tenant ran past the "
                                 "timeout (closing the device clears this)",
                                 runaway_kernels_.load()));
  }
  MutexLock exec(exec_mu_);
  UMDEV_TRY(CheckGeneration(generation));
  // The entry point's name: NUL-terminated within kMaxEntryName bytes.
  char name[kMaxEntryName] = {};
  const uint64_t name_bytes = std::min<uint64_t>(kMaxEntryName, slice_size - entry_offset);
  UMDEV_TRY(slice_->Read(entry_offset, std::as_writable_bytes(std::span(name, name_bytes))));
  const auto* nul = std::find(name, name + name_bytes, '\0');
  if (nul == name + name_bytes) return Fail(EINVAL, "gpu: DISPATCH entry name unterminated");

  std::byte header[kArgsHeaderSize];
  UMDEV_TRY(slice_->Read(args_offset, header));
  DispatchCommand command;
  command.entry_point.assign(name, static_cast<size_t>(nul - name));
  command.groups_x = Load<uint32_t>(header + 0);
  command.groups_y = Load<uint32_t>(header + 4);
  command.groups_z = Load<uint32_t>(header + 8);
  const auto binding_count = Load<uint32_t>(header + 12);
  const auto push_size = Load<uint32_t>(header + 16);
  if (binding_count > kMaxBindings || push_size > kMaxPushConstantBytes) {
    return Fail(EINVAL, fmt::format("gpu: DISPATCH with {} bindings, {} push bytes",
                                    binding_count, push_size));
  }
  const uint64_t tail_bytes = uint64_t{binding_count} * kArgsBindingSize + push_size;
  UMDEV_TRY(CheckRange(slice_size, args_offset + kArgsHeaderSize, tail_bytes,
                            "DISPATCH arguments"));
  // On the stack and in a reused buffer: a small DISPATCH's fixed cost
  // showed its allocations.
  std::array<std::byte, kMaxBindings * kArgsBindingSize + kMaxPushConstantBytes> tail_buffer;
  const std::span<std::byte> tail = std::span(tail_buffer).first(tail_bytes);
  if (!tail.empty()) UMDEV_TRY(slice_->Read(args_offset + kArgsHeaderSize, tail));
  command.bindings.reserve(binding_count);
  for (uint32_t i = 0; i < binding_count; ++i) {
    const std::byte* b = tail.data() + uint64_t{i} * kArgsBindingSize;
    command.bindings.push_back(BufferBinding{.binding = Load<uint32_t>(b),
                                             .offset = Load<uint64_t>(b + 8),
                                             .size = Load<uint64_t>(b + 16)});
  }
  command.push_constants =
      std::span<const std::byte>(tail).subspan(uint64_t{binding_count} * kArgsBindingSize);
  // Read afresh each time (the guest may have rewritten it), into a buffer
  // kept between commands: RunOne runs on one thread at a time.
  dispatch_module_.resize(module_size / 4);
  const std::span<uint32_t> module(dispatch_module_);
  if (!module.empty()) {
    UMDEV_TRY(slice_->Read(module_offset, std::as_writable_bytes(module)));
  }
  command.spirv = module;
  Result<void> ran = slice_->Dispatch(command);
  if (!ran.has_value() && ran.error().code == ETIMEDOUT) {
    const uint32_t runaways = runaway_kernels_.fetch_add(1) + 1;
    spdlog::warn("gpu: a DISPATCH ran past the timeout ({} of {} allowed for this tenant): {}",
                 runaways, kMaxRunawayKernels, ran.error().Describe());
  }
  UMDEV_TRY(ran);
  return 0;
}

Result<void> GpuDevice::CheckNotUnmapped(uint64_t iova, uint64_t size) {
  MutexLock lock(unmap_mu_);
  for (const auto& [first, bytes] : unmapped_) {
    if (iova < first + bytes && first < iova + size) {
      return Fail(EFAULT, fmt::format("gpu: [{:#x}, +{:#x}) unmapped under the command", iova,
                                      size));
    }
  }
  return {};
}

// Recorded first, so the entry running stops pinning the range; then waits
// for the run being copied (exec_mu_) and unpins what the cache holds there.
void GpuDevice::OnDmaUnmap(uint64_t iova, uint64_t size) {
  {
    MutexLock lock(unmap_mu_);
    unmapped_.emplace_back(iova, size);
  }
  unmap_notices_.fetch_add(1);
  MutexLock exec(exec_mu_);
  pin_cache_->Invalidate(iova, size);
}

void GpuDevice::OnPinsRevoked(uint64_t iova, uint64_t size) { OnDmaUnmap(iova, size); }

}  // namespace umdev::vendor::gpu
