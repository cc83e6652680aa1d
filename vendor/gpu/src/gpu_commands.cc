// GpuDevice: the command ring (RunOne) and the execution of each entry.
#include <algorithm>
#include <cstring>
#include <string>

#include <fmt/format.h>

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

// [offset, offset + size) inside a slice of |slice_size| bytes, overflow-safe.
Result<void> CheckSliceRange(uint64_t slice_size, uint64_t offset, uint64_t size,
                             const char* what) {
  if (offset > slice_size || size > slice_size - offset) {
    return Fail(EFAULT, fmt::format("gpu: {} [{:#x}, +{:#x}) outside the slice", what, offset,
                                    size));
  }
  return {};
}

// Guest memory is copied this many pages at a time: one pin per chunk, so an
// unmap waits for at most one chunk.
constexpr uint64_t kChunkPages = 16;

}  // namespace

std::optional<CommandCost> GpuDevice::RunOne() {
  uint64_t entry_iova = 0;
  uint64_t generation = 0;
  uint32_t index = 0;
  {
    MutexLock lock(mu_);
    if ((queue_ctrl_ & kQueueEnable) == 0 || error_code_ != 0 || head_ == tail_) {
      return std::nullopt;
    }
    if (tail_ - head_ > queue_size_) {
      SetError(EINVAL, head_, false);  // TAIL ran more than a ring ahead.
      cv_.NotifyAll();
      return CommandCost{.failed = true};
    }
    index = head_;
    entry_iova = queue_base_ + uint64_t{head_ % queue_size_} * kEntrySize;
    generation = generation_;
    running_ = true;
  }
  {
    MutexLock lock(unmap_mu_);
    unmapped_.clear();
  }
  const auto start = std::chrono::steady_clock::now();
  std::byte entry[kEntrySize];
  Result<uint64_t> done = dma_.DmaRead(entry_iova, entry).has_value()
                              ? Execute(entry, generation)
                              : Result<uint64_t>(Fail(EFAULT, "gpu: ring entry unreadable"));
  const auto busy = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::steady_clock::now() - start);
  CommandCost cost{.busy = busy, .bytes = done.value_or(0), .failed = !done.has_value()};
  MutexLock lock(mu_);
  running_ = false;
  cv_.NotifyAll();
  if (generation != generation_) return cost;  // Reset meanwhile: no trace.
  stats_.busy += busy;
  if (done.has_value()) {
    ++head_;
    ++stats_.commands;
    stats_.bytes += *done;
    if (Load<uint32_t>(entry + kEntryOpcode) == kOpFence) {
      fence_done_ = Load<uint64_t>(entry + kFenceValue);
      if ((Load<uint32_t>(entry + kEntryFlags) & kFenceInterrupt) != 0) RaiseCause(kIntFence);
    }
  } else {
    SetError(done.error().code, index, true);
  }
  return cost;
}

Result<void> GpuDevice::CheckGeneration(uint64_t generation) {
  MutexLock lock(mu_);
  if (generation != generation_) return Fail(ECANCELED, "gpu: reset under the command");
  return {};
}

Result<uint64_t> GpuDevice::Execute(const std::byte* entry, uint64_t generation) {
  const auto opcode = Load<uint32_t>(entry + kEntryOpcode);
  switch (opcode) {
    case kOpCopy:
      return ExecuteCopy(entry, generation);
    case kOpFill: {
      const auto offset = Load<uint64_t>(entry + kFillOffset);
      const auto size = Load<uint64_t>(entry + kFillSize);
      MutexLock exec(exec_mu_);
      UMDEV_TRY(CheckGeneration(generation));
      UMDEV_TRY(slice_->Fill(offset, size, Load<uint32_t>(entry + kFillPattern)));
      return size;
    }
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

Result<uint64_t> GpuDevice::ExecuteCopy(const std::byte* entry, uint64_t generation) {
  const auto flags = Load<uint32_t>(entry + kEntryFlags);
  const auto src = Load<uint64_t>(entry + kCopySrc);
  const auto dst = Load<uint64_t>(entry + kCopyDst);
  const auto size = Load<uint64_t>(entry + kCopySize);
  const bool src_guest = (flags & kCopySrcGuest) != 0;
  const bool dst_guest = (flags & kCopyDstGuest) != 0;
  if ((flags & ~(kCopySrcGuest | kCopyDstGuest)) != 0) return Fail(EINVAL, "gpu: COPY flags");
  if (src_guest && dst_guest) return Fail(EINVAL, "gpu: COPY guest to guest");
  if (size == 0) return Fail(EINVAL, "gpu: COPY of 0 bytes");
  if (src_guest) {
    UMDEV_TRY(CheckSliceRange(slice_->size(), dst, size, "COPY destination"));
    UMDEV_TRY(CopyGuest(src, dst, size, true, generation));
  } else if (dst_guest) {
    UMDEV_TRY(CheckSliceRange(slice_->size(), src, size, "COPY source"));
    UMDEV_TRY(CopyGuest(dst, src, size, false, generation));
  } else {
    MutexLock exec(exec_mu_);
    UMDEV_TRY(CheckGeneration(generation));
    UMDEV_TRY(slice_->Copy(dst, src, size));
  }
  return size;
}

// Moves guest [iova, iova + size) to or from slice [offset, offset + size) a
// chunk at a time. Each chunk is pinned and copied under exec_mu_, which the
// dma_unmap listener takes too: an unmap waits for the chunk, drops the pin,
// and the next chunk fails to pin (EFAULT), so no byte goes to or comes from
// memory the guest no longer maps. Memory without an fd (message DMA) cannot
// be pinned; it is copied with dma_rw through a bounce buffer instead.
Result<void> GpuDevice::CopyGuest(uint64_t iova, uint64_t offset, uint64_t size, bool to_slice,
                                  uint64_t generation) {
  if (iova + size < iova) return Fail(EFAULT, "gpu: guest range wraps");
  const uint32_t prot = to_slice ? kProtRead : kProtWrite;
  std::vector<std::byte> bounce;
  uint64_t done = 0;
  while (done < size) {
    const uint64_t at = iova + done;
    const uint64_t page = at & ~(kPageSize - 1);
    const uint64_t chunk_end = std::min(page + kChunkPages * kPageSize, iova + size);
    const uint64_t bytes = chunk_end - at;
    const int npage = static_cast<int>((chunk_end - page + kPageSize - 1) / kPageSize);
    {
      MutexLock exec(exec_mu_);
      UMDEV_TRY(CheckGeneration(generation));
      UMDEV_TRY(CheckNotUnmapped(page, static_cast<uint64_t>(npage) * kPageSize));
      auto pinned = PinnedPages::Pin(dma_, page, npage, prot);
      if (pinned.has_value()) {
        pinned_ = std::move(*pinned);
        Result<void> copied;
        for (uint64_t c = 0; c < bytes && copied.has_value();) {
          const uint64_t pos = at + c;
          const uint64_t in_page = std::min(bytes - c, kPageSize - pos % kPageSize);
          auto* host = static_cast<std::byte*>(pinned_.pages()[(pos - page) / kPageSize]) +
                       pos % kPageSize;
          copied = to_slice ? slice_->Write(offset + done + c, std::span(host, in_page))
                            : slice_->Read(offset + done + c, std::span(host, in_page));
          c += in_page;
        }
        pinned_.Reset();
        UMDEV_TRY(copied);
        done += bytes;
        continue;
      }
      if (pinned.error().code != EFAULT) return std::unexpected(pinned.error());
      if (!to_slice) {
        bounce.resize(bytes);
        UMDEV_TRY(slice_->Read(offset + done, bounce));
      }
    }
    // Fd-less memory (message DMA) cannot be pinned: bounce through dma_rw,
    // with no lock held, as the copy may be a round trip to the client.
    if (to_slice) {
      bounce.resize(bytes);
      UMDEV_TRY(dma_.DmaRead(at, bounce));
      MutexLock exec(exec_mu_);
      UMDEV_TRY(CheckGeneration(generation));
      UMDEV_TRY(slice_->Write(offset + done, bounce));
    } else {
      UMDEV_TRY(dma_.DmaWrite(at, bounce));
    }
    done += bytes;
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
  UMDEV_TRY(CheckSliceRange(slice_size, module_offset, module_size, "DISPATCH module"));
  UMDEV_TRY(CheckSliceRange(slice_size, entry_offset, 1, "DISPATCH entry name"));
  UMDEV_TRY(CheckSliceRange(slice_size, args_offset, kArgsHeaderSize, "DISPATCH arguments"));

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
  UMDEV_TRY(CheckSliceRange(slice_size, args_offset + kArgsHeaderSize, tail_bytes,
                            "DISPATCH arguments"));
  std::vector<std::byte> tail(tail_bytes);
  if (!tail.empty()) UMDEV_TRY(slice_->Read(args_offset + kArgsHeaderSize, tail));
  for (uint32_t i = 0; i < binding_count; ++i) {
    const std::byte* b = tail.data() + uint64_t{i} * kArgsBindingSize;
    command.bindings.push_back(BufferBinding{.binding = Load<uint32_t>(b),
                                             .offset = Load<uint64_t>(b + 8),
                                             .size = Load<uint64_t>(b + 16)});
  }
  command.push_constants =
      std::span<const std::byte>(tail).subspan(uint64_t{binding_count} * kArgsBindingSize);
  std::vector<uint32_t> module(module_size / 4);
  if (!module.empty()) {
    UMDEV_TRY(slice_->Read(module_offset, std::as_writable_bytes(std::span(module))));
  }
  command.spirv = module;
  UMDEV_TRY(slice_->Dispatch(command));
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
// for the chunk in flight (exec_mu_) and drops its pin if it is still held.
void GpuDevice::OnDmaUnmap(uint64_t iova, uint64_t size) {
  {
    MutexLock lock(unmap_mu_);
    unmapped_.emplace_back(iova, size);
  }
  unmap_notices_.fetch_add(1);
  MutexLock exec(exec_mu_);
  if (!pinned_.empty() && pinned_.Overlaps(iova, size)) pinned_.Reset();
}

void GpuDevice::OnPinsRevoked(uint64_t iova, uint64_t size) { OnDmaUnmap(iova, size); }

}  // namespace umdev::vendor::gpu
