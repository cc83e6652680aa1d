// Type1Backend: DmaRead/DmaWrite (kernel vfio_dma_rw) over mmap()ed or message-channel memory.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "access_plan.h"
#include "copy_readers.h"
#include "dma_region.h"
#include "umdev/common/guest_memory.h"
#include "umdev/common/scope_exit.h"
#include "umdev/pinning/type1_backend.h"

namespace umdev::pinning {

using detail::AccessPlan;
using detail::DmaRegion;
using detail::Segment;

namespace {

// One thread's memory of a mapping it copied through: the IOTLB entry.
struct CachedTranslation {
  const Type1Backend* owner = nullptr;
  uint64_t epoch = 0;
  uint64_t first = 0;  // The mapping's IOVA range, inclusive.
  uint64_t last = 0;
  std::byte* host = nullptr;  // Where |first| is mapped in this process.
  uint32_t prot = 0;
  bool tracks_dirty = false;  // Writes must mark pages: not through the cache.
};

// Two-way set associative, indexed by a mixed hash of the IOVA's page, so
// that the rings and buffers a device keeps touching (often at regular
// strides through a large IOVA space) spread over the sets. 128 sets of two
// 48-byte entries: 12 KiB per thread that copies.
constexpr size_t kCacheSets = 128;
struct CacheSet {
  std::array<CachedTranslation, 2> ways;  // ways[0] the more recently filled.
};
thread_local std::array<CacheSet, kCacheSets> translation_cache;
// The entry of translation_cache this thread last copied through. It may
// since hold another mapping: it is checked like any way of a set.
thread_local CachedTranslation* last_hit = nullptr;

CacheSet& SetOf(uint64_t iova) {
  // MurmurHash3's 64-bit finalizer: every bit of the page number reaches
  // the low bits the set is taken from. (One multiply instead of two piles
  // strided pages, every 16th say, into a few sets.)
  uint64_t h = iova / kPageSize;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return translation_cache[h % kCacheSets];
}

bool Covers(const CachedTranslation& entry, const void* owner, uint64_t iova, size_t len) {
  return entry.owner == owner && iova >= entry.first && iova <= entry.last && len - 1 <= entry.last - iova;
}

std::atomic<uint64_t> next_epoch{1};

// Constant-initialized, so reading it costs no TLS guard.
thread_local detail::CopyReader* this_threads_reader = nullptr;

}  // namespace

uint64_t detail::NewTranslationEpoch() { return next_epoch.fetch_add(1); }

std::optional<Result<void>> Type1Backend::CopyCached(uint64_t iova, size_t len, std::byte* read_into,
                                                     const std::byte* write_from) {
  const bool write = write_from != nullptr;
  // The entry this thread hit last first: a device mostly copies through
  // one mapping (its ring, a buffer), and then the hash is not computed.
  CachedTranslation* found = last_hit;
  if (found == nullptr || !Covers(*found, this, iova, len)) {
    found = nullptr;
    for (CachedTranslation& way : SetOf(iova).ways) {
      if (Covers(way, this, iova, len)) found = &way;
    }
    if (found == nullptr) return std::nullopt;
    last_hit = found;
  }
  const uint32_t needed = write ? kProtWrite : kProtRead;
  if ((found->prot & needed) == 0 || (write && found->tracks_dirty)) {
    return std::nullopt;
  }
  CachedTranslation& entry = *found;
  // Announce the copy, then check the epoch: an invalidation publishes its
  // epoch and then waits for announced copies (copy_readers.h), so either
  // this copy sees the new epoch or the invalidation waits for it.
  if (this_threads_reader == nullptr) this_threads_reader = detail::RegisterCopyReader();
  detail::CopyReader& reader = *this_threads_reader;
  detail::EnterCopy(reader);
  if (translation_epoch_.load() != entry.epoch) {
    detail::ExitCopy(reader);
    entry.owner = nullptr;
    return std::nullopt;
  }
  std::byte* host = entry.host + (iova - entry.first);
  Result<void> copied =
      write ? CopyGuestMemory(host, write_from, len) : CopyGuestMemory(read_into, host, len);
  detail::ExitCopy(reader);
  return copied;
}

void Type1Backend::CacheTranslationLocked(uint64_t iova, AccessPlan& plan) {
  const std::span<Segment> segments = plan.segments();
  if (segments.size() != 1 || segments[0].host == nullptr || segments[0].region == nullptr) return;
  if (!CachingAllowedLocked()) return;
  DmaRegion& region = *segments[0].region;
  region.cached = true;
  CacheSet& set = SetOf(iova);
  set.ways[1] = set.ways[0];
  set.ways[0] = {.owner = this,
                  .epoch = translation_epoch_.load(),
                  .first = region.iova,
                  .last = region.last(),
                  .host = region.mapping.data(),
                  .prot = region.prot,
                  .tracks_dirty = region.dirty != nullptr};
}

void Type1Backend::InvalidateTranslationsLocked() {
  translation_epoch_.store(detail::NewTranslationEpoch());
  ++invalidations_;
  ++invalidations_in_window_;
}

bool Type1Backend::CachingAllowedLocked() {
  const auto now = std::chrono::steady_clock::now();
  if (now - invalidation_window_ >= std::chrono::seconds(1)) {
    invalidation_window_ = now;
    invalidations_in_window_ = 0;
  }
  return invalidations_in_window_ < limits_.max_cache_invalidations_per_second;
}

uint64_t Type1Backend::translation_invalidations() const {
  MutexLock lock(mu_);
  return invalidations_;
}

void Type1Backend::WaitForCachedCopies() const { detail::WaitForCopyReaders(); }

Result<void> Type1Backend::DmaRead(uint64_t iova, std::span<std::byte> out) {
  if (out.empty()) return {};
  if (auto cached = CopyCached(iova, out.size(), out.data(), nullptr)) return *cached;
  AccessPlan plan;
  {
    MutexLock lock(mu_);
    UMDEV_TRY(PlanAccessLocked(iova, out.size(), /*write=*/false, plan));
    CacheTranslationLocked(iova, plan);
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
  if (auto cached = CopyCached(iova, data.size(), nullptr, data.data())) return *cached;
  AccessPlan plan;
  {
    MutexLock lock(mu_);
    UMDEV_TRY(PlanAccessLocked(iova, data.size(), /*write=*/true, plan));
    CacheTranslationLocked(iova, plan);
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
