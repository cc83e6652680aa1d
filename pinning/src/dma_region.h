// DmaRegion: one live DMA mapping of a Type1Backend, with its pins and dirty bits.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "umdev/common/mapping.h"
#include "umdev/mdev_core/dma.h"

namespace umdev::pinning::detail {

// One dirty bit per kPageSize page of a mapping, whatever the tracking pgsize,
// so mappings need not be aligned to it. Thread-safe: DmaWrite marks bits
// after its copy, with no backend lock held, while reports clear them.
class DirtyBits {
 public:
  explicit DirtyBits(uint64_t pages)
      : words_(std::make_unique<std::atomic<uint64_t>[]>((pages + 63) / 64)) {}

  // Marks pages [first, end).
  void Mark(uint64_t first, uint64_t end) {
    while (first < end) {
      const uint64_t bit = first % 64;
      const uint64_t count = std::min<uint64_t>(64 - bit, end - first);
      const uint64_t mask = count == 64 ? ~uint64_t{0} : ((uint64_t{1} << count) - 1) << bit;
      words_[first / 64].fetch_or(mask, std::memory_order_relaxed);
      first += count;
    }
  }
  bool TestAndClear(uint64_t page) {
    const uint64_t mask = uint64_t{1} << (page % 64);
    return (words_[page / 64].fetch_and(~mask, std::memory_order_relaxed) & mask) != 0;
  }

 private:
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
};

// The pins on one page: a total and who holds them (usually one device).
struct PinnedPage {
  uint32_t total = 0;
  std::vector<std::pair<DmaUnmapListener*, uint32_t>> owners;
};

// Thread-compatible: every field but the atomics is guarded by the owning
// backend's mu_; the mapping's memory is read and written without it.
struct DmaRegion {
  uint64_t iova = 0;
  uint64_t size = 0;
  uint32_t prot = 0;
  Mapping mapping;  // Invalid: fd-less, reached through the message channel.
  // Keyed by page index inside the mapping.
  std::map<uint64_t, PinnedPage> pins;
  // Null while tracking is off. Shared with writes in flight, which may mark
  // a detached bitmap after tracking stops; that is harmless.
  std::shared_ptr<DirtyBits> dirty;
  // Copies in flight to or from |mapping|; taken under mu_ while the region
  // is in the tree, so none can start once it is removed.
  std::atomic<uint32_t> accessors{0};
  std::atomic<bool> draining{false};
  // Some thread's translation cache may hold it: removing it must
  // invalidate the caches (which costs a process-wide barrier).
  bool cached = false;

  uint64_t last() const { return iova + size - 1; }
  uint64_t pages() const { return size / kPageSize; }
  bool has_fd() const { return mapping.valid(); }

  void ReleaseAccessor() {
    if (accessors.fetch_sub(1) == 1 && draining.load()) accessors.notify_all();
  }
};

// A value no Type1Backend's translation epoch has had yet (type1_dma_rw.cc).
uint64_t NewTranslationEpoch();

// A pinned mapping found by an unmap: the range reported to listeners.
struct PinnedRange {
  uint64_t iova = 0;
  uint64_t size = 0;
};

// A listener whose pins in |range| an unmap released by force.
struct Revocation {
  DmaUnmapListener* owner = nullptr;
  PinnedRange range;
};

// One page of a pin request, checked and not yet pinned.
struct PinTarget {
  DmaRegion* region = nullptr;
  uint64_t index = 0;  // Page index inside |region|.
  std::byte* host = nullptr;
  bool first_pin = false;  // Not pinned by anyone yet: to be mlock()ed and charged.
};

}  // namespace umdev::pinning::detail
