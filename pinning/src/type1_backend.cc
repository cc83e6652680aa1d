// Type1Backend: the IOVA tree, map and unmap, and the unmap contract with listeners.
#include "umdev/pinning/type1_backend.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <utility>

#include "dma_region.h"

namespace umdev::pinning {
namespace {

using detail::DmaRegion;
using detail::PinnedRange;
using detail::Revocation;

// After the listeners return, how long an unmap waits for pins released by
// another thread before the next round (devices that unpin asynchronously).
constexpr auto kUnpinGrace = std::chrono::milliseconds(1);

bool IsPageAligned(uint64_t value) { return value % kPageSize == 0; }

int MmapProt(uint32_t prot) {
  return ((prot & kProtRead) ? PROT_READ : 0) | ((prot & kProtWrite) ? PROT_WRITE : 0);
}

Result<void> CheckMapRequest(const DmaMapRequest& request) {
  const bool bad_range = request.size == 0 || !IsPageAligned(request.iova) ||
                         !IsPageAligned(request.size) ||
                         request.iova + request.size - 1 < request.iova;
  const bool bad_prot = request.prot == 0 || (request.prot & ~kProtMask) != 0;
  const bool bad_offset = request.fd.valid() && (!IsPageAligned(request.offset) ||
                                                 request.offset + request.size < request.offset);
  if (bad_range || bad_prot || bad_offset) {
    return Fail(EINVAL, fmt::format("map [{:#x}, +{:#x}) prot {:#x} offset {:#x}: invalid",
                                    request.iova, request.size, request.prot, request.offset));
  }
  return {};
}

}  // namespace

Type1Backend::Type1Backend(std::shared_ptr<LockedMemoryAccount> account, Type1Limits limits)
    : account_(std::move(account)), limits_(limits), translation_epoch_(detail::NewTranslationEpoch()) {}

Type1Backend::~Type1Backend() {
  if (auto unmapped = UnmapAll(); !unmapped.has_value()) {
    spdlog::error("type1: teardown: {}", unmapped.error().Describe());
  }
}

IommuInfo Type1Backend::info() const {
  return IommuInfo{.pgsizes = kPageSize, .max_mappings = limits_.max_mappings};
}

void Type1Backend::SetMessageChannel(DmaMessageChannel* channel) {
  MutexLock lock(mu_);
  channel_ = channel;
  while (channel_calls_ > 0) changed_.Wait(mu_);
}

Result<void> Type1Backend::Map(DmaMapRequest request) {
  UMDEV_TRY(CheckMapRequest(request));
  auto region = std::make_shared<DmaRegion>();
  region->iova = request.iova;
  region->size = request.size;
  region->prot = request.prot;
  if (request.fd.valid()) {
    UMDEV_TRY(CheckGuestMemoryFd(request));
    // mmap() before taking mu_: it may be slow, and a refused request only
    // costs the munmap() of the Mapping's destructor.
    UMDEV_ASSIGN_OR_RETURN(region->mapping,
                           Mapping::Map(request.fd.get(), static_cast<off_t>(request.offset),
                                        request.size, MmapProt(request.prot), MAP_SHARED));
  }
  MutexLock lock(mu_);
  if (OverlapsLocked(region->iova, region->last())) {
    return Fail(EEXIST, fmt::format("map [{:#x}, +{:#x}): overlaps a live mapping",
                                    request.iova, request.size));
  }
  if (regions_.size() >= limits_.max_mappings ||
      request.size > limits_.max_mapped_bytes - mapped_bytes_) {
    return Fail(ENOSPC, fmt::format("map [{:#x}, +{:#x}): {} mappings of {:#x} bytes live",
                                    request.iova, request.size, regions_.size(),
                                    mapped_bytes_));
  }
  if (dirty_pgsize_ != 0) region->dirty = std::make_shared<detail::DirtyBits>(region->pages());
  mapped_bytes_ += region->size;
  regions_.emplace(region->iova, std::move(region));
  return {};
}

Result<uint64_t> Type1Backend::Unmap(uint64_t iova, uint64_t size) {
  if (size == 0 || !IsPageAligned(iova) || !IsPageAligned(size) || iova + size - 1 < iova) {
    return Fail(EINVAL, fmt::format("unmap [{:#x}, +{:#x}): invalid range", iova, size));
  }
  return UnmapRange(iova, iova + size - 1);
}

Result<uint64_t> Type1Backend::UnmapAll() {
  return UnmapRange(0, std::numeric_limits<uint64_t>::max());
}

Result<uint64_t> Type1Backend::UnmapRange(uint64_t first, uint64_t last) {
  Regions removed;
  bool cached = false;
  std::vector<Revocation> revocations;
  {
    MutexLock lock(mu_);
    // kernel vfio_dma_do_unmap(): "Vendor drivers MUST unpin pages in response
    // to an invalidation", so notify, re-take the lock and look again; the tree
    // may have changed while it was dropped.
    for (int round = 0;; ++round) {
      UMDEV_ASSIGN_OR_RETURN(std::vector<PinnedRange> pinned, PinnedInRangeLocked(first, last));
      if (pinned.empty()) break;
      if (round == kMaxUnmapRetries) {
        // Revoke and remove under one hold of mu_, so nothing can pin again.
        revocations = RevokePinsLocked(pinned);
        break;
      }
      NotifyUnmapLocked(pinned);
      UMDEV_ASSIGN_OR_RETURN(pinned, PinnedInRangeLocked(first, last));
      if (!pinned.empty()) changed_.WaitFor(mu_, kUnpinGrace);
    }
    removed = RemoveRangeLocked(first, last);
    // Only a mapping some copy went through can be in a translation cache.
    cached = std::any_of(removed.begin(), removed.end(), [](const auto& r) { return r->cached; });
    if (cached) InvalidateTranslationsLocked();
  }
  NotifyRevoked(revocations);
  uint64_t bytes = 0;
  for (const auto& region : removed) bytes += region->size;
  WaitForAccessors(removed);
  if (cached) WaitForCachedCopies();
  return bytes;  // |removed| goes out of scope: munmap() unless a copy still holds one.
}

Result<std::vector<PinnedRange>> Type1Backend::PinnedInRangeLocked(uint64_t first,
                                                                   uint64_t last) {
  std::vector<PinnedRange> pinned;
  auto it = regions_.upper_bound(first);
  if (it != regions_.begin()) --it;
  for (; it != regions_.end() && it->second->iova <= last; ++it) {
    const DmaRegion& region = *it->second;
    if (region.last() < first) continue;
    // type1 v2 refuses to split a mapping, at either end of the range.
    if (region.iova < first || region.last() > last) {
      return Fail(EINVAL, fmt::format("unmap [{:#x}, {:#x}]: cuts mapping [{:#x}, +{:#x})",
                                      first, last, region.iova, region.size));
    }
    if (!region.pins.empty()) pinned.push_back({region.iova, region.size});
  }
  return pinned;
}

void Type1Backend::NotifyUnmapLocked(const std::vector<PinnedRange>& ranges) {
  std::vector<DmaUnmapListener*> targets;
  for (auto& [listener, state] : listeners_) {
    if (state.detaching) continue;  // Its pins are being released already.
    ++state.callbacks_in_flight;
    targets.push_back(listener);
  }
  mu_.Unlock();
  for (DmaUnmapListener* listener : targets) {
    for (const PinnedRange& range : ranges) listener->OnDmaUnmap(range.iova, range.size);
  }
  mu_.Lock();
  for (DmaUnmapListener* listener : targets) --listeners_.at(listener).callbacks_in_flight;
  changed_.NotifyAll();
}

std::vector<Revocation> Type1Backend::RevokePinsLocked(const std::vector<PinnedRange>& ranges) {
  std::vector<Revocation> revocations;
  for (const PinnedRange& range : ranges) {
    DmaRegion& region = *regions_.at(range.iova);
    std::vector<DmaUnmapListener*> owners;
    for (const auto& [index, page] : region.pins) {
      for (const auto& [owner, count] : page.owners) {
        if (std::find(owners.begin(), owners.end(), owner) == owners.end()) {
          owners.push_back(owner);
        }
      }
    }
    for (DmaUnmapListener* owner : owners) {
      spdlog::error("type1: listener {} kept pins in [{:#x}, +{:#x}) after {} unmap "
                    "notifications; revoking them",
                    fmt::ptr(owner), range.iova, range.size, kMaxUnmapRetries);
      UnchargeLocked(ReleaseOwnerPinsLocked(region, *owner));
      ListenerState& state = listeners_.at(owner);
      if (state.detaching) continue;
      ++state.callbacks_in_flight;
      revocations.push_back({owner, range});
    }
  }
  return revocations;
}

void Type1Backend::NotifyRevoked(const std::vector<Revocation>& revocations) {
  if (revocations.empty()) return;
  for (const Revocation& r : revocations) r.owner->OnPinsRevoked(r.range.iova, r.range.size);
  MutexLock lock(mu_);
  for (const Revocation& r : revocations) --listeners_.at(r.owner).callbacks_in_flight;
  changed_.NotifyAll();
}

Type1Backend::Regions Type1Backend::RemoveRangeLocked(uint64_t first, uint64_t last) {
  Regions removed;
  auto it = regions_.lower_bound(first);
  while (it != regions_.end() && it->second->last() <= last) {
    DmaRegion& region = *it->second;
    region.draining.store(true);
    mapped_bytes_ -= region.size;
    removed.push_back(std::move(it->second));
    it = regions_.erase(it);
  }
  return removed;
}

void Type1Backend::WaitForAccessors(const Regions& regions) {
  for (const auto& region : regions) {
    // Pairs with DmaRegion::ReleaseAccessor(): |draining| was set under mu_
    // before this load, so a copy that ends now sees it and notifies.
    for (uint32_t n = region->accessors.load(); n != 0; n = region->accessors.load()) {
      region->accessors.wait(n);
    }
  }
}

DmaRegion* Type1Backend::FindLocked(uint64_t iova) const {
  auto it = regions_.upper_bound(iova);
  if (it == regions_.begin()) return nullptr;
  --it;
  return iova <= it->second->last() ? it->second.get() : nullptr;
}

bool Type1Backend::OverlapsLocked(uint64_t first, uint64_t last) const {
  if (FindLocked(first) != nullptr) return true;
  auto next = regions_.upper_bound(first);
  return next != regions_.end() && next->second->iova <= last;
}

Result<void> Type1Backend::AttachListener(DmaUnmapListener& listener) {
  MutexLock lock(mu_);
  if (!listeners_.try_emplace(&listener).second) {
    return Fail(EEXIST, fmt::format("attach listener {}: already attached", fmt::ptr(&listener)));
  }
  return {};
}

void Type1Backend::DetachListener(DmaUnmapListener& listener) {
  MutexLock lock(mu_);
  auto it = listeners_.find(&listener);
  if (it == listeners_.end()) {
    spdlog::debug("type1: detach of listener {} that is not attached", fmt::ptr(&listener));
    return;
  }
  it->second.detaching = true;  // No new callbacks, no new pins.
  uint64_t released = 0;
  for (auto& [iova, region] : regions_) released += ReleaseOwnerPinsLocked(*region, listener);
  if (released != 0) {
    spdlog::warn("type1: listener {} detached holding {:#x} pinned bytes; released them",
                 fmt::ptr(&listener), released);
  }
  UnchargeLocked(released);
  while (it->second.callbacks_in_flight > 0) changed_.Wait(mu_);
  listeners_.erase(it);
}

bool Type1Backend::IsAttachedLocked(const DmaUnmapListener* listener) const {
  auto it = listeners_.find(const_cast<DmaUnmapListener*>(listener));
  return it != listeners_.end() && !it->second.detaching;
}

size_t Type1Backend::mapping_count() const {
  MutexLock lock(mu_);
  return regions_.size();
}

uint64_t Type1Backend::mapped_bytes() const {
  MutexLock lock(mu_);
  return mapped_bytes_;
}

uint64_t Type1Backend::locked_bytes() const {
  MutexLock lock(mu_);
  return locked_bytes_;
}

}  // namespace umdev::pinning
