// Type1Backend: the type1 (VFIO_TYPE1v2_IOMMU) IOVA space of one container.
#pragma once

#include <cstddef>
#include <cstdint>
#include <atomic>
#include <chrono>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/mdev_core/dma.h"
#include "umdev/mdev_core/iommu_backend.h"
#include "umdev/pinning/locked_memory_account.h"

namespace umdev::pinning {

// Per-container caps (kernel: dma_entry_limit and the locked_vm check).
struct Type1Limits {
  // Live mappings (kernel module parameter dma_entry_limit defaults to 65535).
  uint32_t max_mappings = 65535;
  // Sum of the sizes of live mappings.
  uint64_t max_mapped_bytes = std::numeric_limits<uint64_t>::max();
  // Bytes this container may hold pinned (locked) at once.
  uint64_t container_locked_limit = std::numeric_limits<uint64_t>::max();
  // Unmaps a second that may invalidate the translation caches (each costs
  // a process-wide barrier) before the backend stops filling them for the
  // rest of that second: a guest IOMMU that maps and unmaps per I/O then
  // pays for the locked path, not for a barrier per unmap.
  uint32_t max_cache_invalidations_per_second = 256;
};

namespace detail {
struct DmaRegion;
class AccessPlan;
struct PinnedRange;
struct Revocation;
struct PinTarget;
}  // namespace detail

// An emulated (mdev) container's IOMMU: guest memory is mmap()ed from the fd
// each DMA_MAP brings, or reached through the DmaMessageChannel when it has
// none. Devices read and write it (DmaRead/DmaWrite) or pin pages, which are
// mlock()ed and charged to the container and to the daemon's account.
//
// Unmap contract (kernel vfio_dma_do_unmap): an unmap over pinned pages calls
// OnDmaUnmap() of every attached listener with no lock held and re-checks, up
// to kMaxUnmapRetries times; pins still left are then revoked (released by
// force, OnPinsRevoked() called) and the unmap completes. OnPinsRevoked() runs
// before the memory is munmap()ed, so a device that serialises its use of
// pinned pages with its callbacks never touches unmapped memory. An unmap returns only
// after every DmaRead/DmaWrite that was copying to or from its memory is done,
// so no access touches memory after it is munmap()ed. Accesses through the
// message channel do not delay an unmap: there is no local memory to protect,
// and the channel's reply may need the very thread that performs the unmap.
//
// Dirty tracking reports pages written by DmaWrite and, as type1 does, every
// page that is pinned (or was pinned since the last report).
//
// Thread-safe: transport threads map and unmap, device threads pin and copy,
// all at once. One lock (mu_) guards the IOVA tree, pins and listeners; it is
// never held across a listener or channel call or a memcpy of guest memory.
class Type1Backend final : public IommuBackend {
 public:
  // Notify-and-recheck rounds before pins are revoked (type1's BUG_ON bound).
  static constexpr int kMaxUnmapRetries = 10;
  // kernel VFIO_PIN_PAGES_MAX_ENTRIES on 4 KiB pages.
  static constexpr int kMaxPinPages = 512;

  // |account| is shared by every backend of the daemon; must not be null.
  explicit Type1Backend(std::shared_ptr<LockedMemoryAccount> account, Type1Limits limits = {});
  // Unmaps everything through the unmap contract, so attached listeners are
  // told and every pin and charge is returned. Listeners must still be alive.
  ~Type1Backend() override;
  Type1Backend(const Type1Backend&) = delete;
  Type1Backend& operator=(const Type1Backend&) = delete;

  IommuInfo info() const override;
  // Waits for calls in flight on the previous channel before returning.
  void SetMessageChannel(DmaMessageChannel* channel) override UMDEV_EXCLUDES(mu_);

  // Errors: EINVAL size 0, iova/size/offset not page aligned, range overflows,
  // prot 0 or unknown bits; EEXIST overlaps a live mapping; ENOSPC
  // max_mappings or max_mapped_bytes reached; mmap's errno (EACCES, EBADF...).
  // The fd is closed once mapped: the mapping keeps the memory alive, and
  // 65535 mappings must not cost 65535 descriptors.
  Result<void> Map(DmaMapRequest request) override UMDEV_EXCLUDES(mu_);
  // Unmaps the mappings lying wholly inside [iova, iova + size) and returns
  // their bytes (0 when none, as type1 v2). Blocks for listener callbacks and
  // in-flight copies. Errors: EINVAL size 0, unaligned, overflow, or the range
  // cuts a mapping. Must not be called from a DmaUnmapListener callback.
  Result<uint64_t> Unmap(uint64_t iova, uint64_t size) override UMDEV_EXCLUDES(mu_);
  Result<uint64_t> UnmapAll() override UMDEV_EXCLUDES(mu_);

  // Errors: EEXIST already attached.
  Result<void> AttachListener(DmaUnmapListener& listener) override UMDEV_EXCLUDES(mu_);
  // Releases the listener's pins by force and waits for its callbacks in
  // flight. Must not be called from that listener's own callback.
  void DetachListener(DmaUnmapListener& listener) override UMDEV_EXCLUDES(mu_);

  // kernel vfio_pin_pages(): mlock()s the pages and returns their host
  // addresses; every call needs its own UnpinPages. All or nothing.
  // Errors: EINVAL iova unaligned, npage < 1, prot 0 or unknown bits, owner not
  // attached; E2BIG npage > kMaxPinPages; EFAULT a page is not mapped or has
  // no fd (message-channel memory cannot be pinned); EPERM prot exceeds the
  // mapping's rights; ENOMEM container_locked_limit, the daemon's
  // LockedMemoryAccount or mlock() refuses. Safe to call from OnDmaUnmap().
  Result<std::vector<void*>> PinPages(DmaUnmapListener& owner, uint64_t iova, int npage,
                                      uint32_t prot) override UMDEV_EXCLUDES(mu_);
  // Drops one pin per page held by |owner|; pages it does not hold are
  // skipped with a debug log (the kernel WARNs). Safe to call from OnDmaUnmap().
  void UnpinPages(DmaUnmapListener& owner, uint64_t iova, int npage) override
      UMDEV_EXCLUDES(mu_);

  // kernel vfio_dma_rw(): copies |out.size()| bytes at any IOVA, across
  // adjacent mappings. Every byte is checked before any is copied.
  // Errors: EFAULT a byte is unmapped, fd-less with no channel, or the range
  // wraps; EPERM the mapping lacks read (DmaRead) or write (DmaWrite) rights;
  // the channel's errno (the copy may then be partial).
  Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) override UMDEV_EXCLUDES(mu_);
  Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) override
      UMDEV_EXCLUDES(mu_);

  // Errors: EINVAL pgsize is not kPageSize times a power of two; EBUSY
  // tracking is already on with another pgsize (the same pgsize is a no-op).
  Result<void> StartDirtyTracking(uint64_t pgsize) override UMDEV_EXCLUDES(mu_);
  // Drops every dirty bit; a no-op when tracking is off.
  Result<void> StopDirtyTracking() override UMDEV_EXCLUDES(mu_);
  // Bit i of the result (word i / 64, bit i % 64) is page i of the range.
  // Errors: EINVAL tracking off, pgsize differs from the tracking pgsize,
  // range empty, unaligned to pgsize, overflowing, or not wholly mapped.
  Result<std::vector<uint64_t>> ReadAndClearDirty(uint64_t iova, uint64_t size,
                                                  uint64_t pgsize) override UMDEV_EXCLUDES(mu_);

  // Accounting, for status output, tests and benchmarks.
  size_t mapping_count() const override UMDEV_EXCLUDES(mu_);
  uint64_t mapped_bytes() const UMDEV_EXCLUDES(mu_);
  // Bytes pinned by this container (each page once, however many pins).
  uint64_t locked_bytes() const override UMDEV_EXCLUDES(mu_);
  // Unmaps (and dirty-tracking switches) that invalidated the translation
  // caches; see Type1Limits::max_cache_invalidations_per_second.
  uint64_t translation_invalidations() const UMDEV_EXCLUDES(mu_);
  const Type1Limits& limits() const { return limits_; }

 private:
  struct ListenerState {
    uint32_t callbacks_in_flight = 0;
    bool detaching = false;
  };
  // Shared with copies in flight: the last reference munmap()s the memory.
  using RegionMap = std::map<uint64_t, std::shared_ptr<detail::DmaRegion>>;
  using Regions = std::vector<std::shared_ptr<detail::DmaRegion>>;

  // Unmaps what lies wholly inside [first, last] (inclusive: UnmapAll spans 2^64).
  Result<uint64_t> UnmapRange(uint64_t first, uint64_t last) UMDEV_EXCLUDES(mu_);
  // The pinned mappings inside [first, last]. Errors: EINVAL a mapping is cut.
  Result<std::vector<detail::PinnedRange>> PinnedInRangeLocked(uint64_t first, uint64_t last)
      UMDEV_REQUIRES(mu_);
  // Calls OnDmaUnmap() of every listener for each range, dropping mu_ meanwhile.
  void NotifyUnmapLocked(const std::vector<detail::PinnedRange>& ranges) UMDEV_REQUIRES(mu_);
  // Releases by force the pins left in |ranges|; returns whom to tell.
  std::vector<detail::Revocation> RevokePinsLocked(const std::vector<detail::PinnedRange>& ranges)
      UMDEV_REQUIRES(mu_);
  void NotifyRevoked(const std::vector<detail::Revocation>& revocations) UMDEV_EXCLUDES(mu_);
  Regions RemoveRangeLocked(uint64_t first, uint64_t last) UMDEV_REQUIRES(mu_);
  // Blocks until no DmaRead/DmaWrite is copying to or from |regions|.
  static void WaitForAccessors(const Regions& regions);

  // The mapping containing |iova|, or null.
  detail::DmaRegion* FindLocked(uint64_t iova) const UMDEV_REQUIRES(mu_);
  bool OverlapsLocked(uint64_t first, uint64_t last) const UMDEV_REQUIRES(mu_);
  bool IsAttachedLocked(const DmaUnmapListener* listener) const UMDEV_REQUIRES(mu_);
  // Checks every page of a pin request; EFAULT, EPERM as PinPages.
  Result<std::vector<detail::PinTarget>> PlanPinLocked(uint64_t iova, int npage,
                                                       uint32_t prot) const UMDEV_REQUIRES(mu_);
  // Drops one pin of |owner| on page |index| of |region|, or with |all| every
  // pin it holds there. Returns true when that was the page's last pin: the
  // caller munlock()s it and uncharges it.
  bool DropPinLocked(detail::DmaRegion& region, uint64_t index, const DmaUnmapListener& owner,
                     bool all) UMDEV_REQUIRES(mu_);
  // Drops every pin |owner| holds in |region|, munlock()s the pages that are
  // no longer pinned and returns their bytes, to be uncharged.
  uint64_t ReleaseOwnerPinsLocked(detail::DmaRegion& region, const DmaUnmapListener& owner)
      UMDEV_REQUIRES(mu_);
  // Returns |bytes| of unlocked pages to both accounts and wakes waiters.
  void UnchargeLocked(uint64_t bytes) UMDEV_REQUIRES(mu_);

  // Checks the whole access and takes the references its copy needs.
  Result<void> PlanAccessLocked(uint64_t iova, size_t len, bool write,
                                detail::AccessPlan& plan) UMDEV_REQUIRES(mu_);

  // The translation cache (type1_dma_rw.cc): each thread remembers, per
  // backend, the fd-backed mappings its recent copies fell in, so that a
  // copy inside one of them takes no lock and no region reference. A
  // cached translation is valid while translation_epoch_ is what it was
  // when cached; removing a mapping or switching dirty tracking bumps the
  // epoch and then waits until no cached copy is in flight, so none uses a
  // removed mapping once its unmap has returned.
  //
  // The copy through a cached translation (into |read_into|, or from
  // |write_from| when that is set); nullopt when none covers it.
  std::optional<Result<void>> CopyCached(uint64_t iova, size_t len, std::byte* read_into,
                                         const std::byte* write_from) UMDEV_EXCLUDES(mu_);
  // Remembers |plan|'s mapping for this thread when the access was one
  // fd-backed piece.
  void CacheTranslationLocked(uint64_t iova, detail::AccessPlan& plan) UMDEV_REQUIRES(mu_);
  void InvalidateTranslationsLocked() UMDEV_REQUIRES(mu_);
  // Whether a copy's mapping may be cached now (the invalidation budget).
  bool CachingAllowedLocked() UMDEV_REQUIRES(mu_);
  void WaitForCachedCopies() const;
  void EndChannelCall() UMDEV_EXCLUDES(mu_);

  const std::shared_ptr<LockedMemoryAccount> account_;
  const Type1Limits limits_;

  mutable Mutex mu_;
  // Signalled when pins are released, a callback returns or a channel call ends.
  CondVar changed_;
  RegionMap regions_ UMDEV_GUARDED_BY(mu_);  // Keyed by first IOVA; never overlapping.
  uint64_t mapped_bytes_ UMDEV_GUARDED_BY(mu_) = 0;
  uint64_t locked_bytes_ UMDEV_GUARDED_BY(mu_) = 0;
  uint64_t dirty_pgsize_ UMDEV_GUARDED_BY(mu_) = 0;  // 0: tracking off.
  // Not owned; each listener outlives its DetachListener().
  std::map<DmaUnmapListener*, ListenerState> listeners_ UMDEV_GUARDED_BY(mu_);
  DmaMessageChannel* channel_ UMDEV_GUARDED_BY(mu_) = nullptr;  // Not owned.
  uint32_t channel_calls_ UMDEV_GUARDED_BY(mu_) = 0;
  // Unique across the process (a backend later allocated at the same
  // address never matches an old thread's entries); written under mu_.
  std::atomic<uint64_t> translation_epoch_;
  uint64_t invalidations_ UMDEV_GUARDED_BY(mu_) = 0;
  std::chrono::steady_clock::time_point invalidation_window_ UMDEV_GUARDED_BY(mu_);
  uint32_t invalidations_in_window_ UMDEV_GUARDED_BY(mu_) = 0;
};

}  // namespace umdev::pinning
