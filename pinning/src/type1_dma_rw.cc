// Type1Backend: DmaRead/DmaWrite (kernel vfio_dma_rw) over mmap()ed or message-channel memory.
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "access_plan.h"
#include "dma_region.h"
#include "umdev/common/guest_memory.h"
#include "umdev/common/scope_exit.h"
#include "umdev/pinning/type1_backend.h"

namespace umdev::pinning {

using detail::AccessPlan;
using detail::DmaRegion;
using detail::Segment;

Result<void> Type1Backend::DmaRead(uint64_t iova, std::span<std::byte> out) {
  if (out.empty()) return {};
  AccessPlan plan;
  {
    MutexLock lock(mu_);
    UMDEV_TRY(PlanAccessLocked(iova, out.size(), /*write=*/false, plan));
  }
  ScopeExit end_call([&] {
    if (plan.channel != nullptr) EndChannelCall();
  });
  for (const Segment& segment : plan.segments()) {
    std::span<std::byte> piece = out.subspan(segment.buffer_offset, segment.length);
    if (segment.host != nullptr) {
      UMDEV_TRY(CopyGuestMemory(piece.data(), segment.host, piece.size()));
    } else {
      UMDEV_TRY(plan.channel->DmaRead(segment.iova, piece));
    }
  }
  return {};
}

Result<void> Type1Backend::DmaWrite(uint64_t iova, std::span<const std::byte> data) {
  if (data.empty()) return {};
  AccessPlan plan;
  {
    MutexLock lock(mu_);
    UMDEV_TRY(PlanAccessLocked(iova, data.size(), /*write=*/true, plan));
  }
  ScopeExit end_call([&] {
    if (plan.channel != nullptr) EndChannelCall();
  });
  for (const Segment& segment : plan.segments()) {
    std::span<const std::byte> piece = data.subspan(segment.buffer_offset, segment.length);
    if (segment.host != nullptr) {
      UMDEV_TRY(CopyGuestMemory(segment.host, piece.data(), piece.size()));
    } else {
      UMDEV_TRY(plan.channel->DmaWrite(segment.iova, piece));
    }
    // Marked after the copy, so a report that clears the bit mid-copy is
    // followed by another set: the page is reported again, never lost.
    if (segment.dirty) {
      const uint64_t first = segment.region_offset / kPageSize;
      const uint64_t end = (segment.region_offset + segment.length - 1) / kPageSize + 1;
      segment.dirty->Mark(first, end);
    }
  }
  return {};
}

Result<void> Type1Backend::PlanAccessLocked(uint64_t iova, size_t len, bool write,
                                            AccessPlan& plan) {
  const char* const verb = write ? "write" : "read";
  if (iova + len - 1 < iova) {
    return Fail(EFAULT, fmt::format("dma {} [{:#x}, +{:#x}): wraps", verb, iova, len));
  }
  const uint32_t needed = write ? kProtWrite : kProtRead;
  auto it = regions_.upper_bound(iova);
  if (it != regions_.begin()) --it;
  uint64_t cursor = iova;
  for (size_t done = 0; done < len; ++it) {
    if (it == regions_.end() || it->second->iova > cursor || it->second->last() < cursor) {
      return Fail(EFAULT, fmt::format("dma {} [{:#x}, +{:#x}): {:#x} is not mapped", verb, iova,
                                      len, cursor));
    }
    const std::shared_ptr<DmaRegion>& region = it->second;
    if ((region->prot & needed) == 0) {
      return Fail(EPERM, fmt::format("dma {} [{:#x}, +{:#x}): mapping [{:#x}, +{:#x}) prot "
                                     "{:#x}",
                                     verb, iova, len, region->iova, region->size, region->prot));
    }
    if (!region->has_fd() && channel_ == nullptr) {
      return Fail(EFAULT, fmt::format("dma {} [{:#x}, +{:#x}): mapping [{:#x}, +{:#x}) has no "
                                      "fd and no message channel is set",
                                      verb, iova, len, region->iova, region->size));
    }
    Segment segment;
    segment.iova = cursor;
    segment.region_offset = cursor - region->iova;
    segment.buffer_offset = done;
    segment.length = static_cast<size_t>(std::min<uint64_t>(len - done,
                                                            region->size - segment.region_offset));
    if (region->has_fd()) {
      segment.host = region->mapping.data() + segment.region_offset;
      segment.region = region;
    }
    if (write) segment.dirty = region->dirty;
    done += segment.length;
    cursor += segment.length;
    plan.Add(std::move(segment));
  }
  const auto segments = plan.segments();
  if (std::any_of(segments.begin(), segments.end(),
                  [](const Segment& s) { return s.host == nullptr; })) {
    plan.channel = channel_;
    ++channel_calls_;
  }
  return {};
}

void Type1Backend::EndChannelCall() {
  MutexLock lock(mu_);
  if (--channel_calls_ == 0) changed_.NotifyAll();
}

}  // namespace umdev::pinning
