// GuestPinCache: guest pages a device keeps pinned across commands.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>

#include "umdev/common/error.h"
#include "umdev/mdev_core/dma.h"
#include "umdev/mdev_core/dma_access.h"

namespace umdev::vendor::gpu {

// Pinning a page is an mlock() and unpinning a munlock(): done per COPY,
// that costs nine times the copy itself. Like the kernel's vGPU drivers
// (GVT-g's gfn cache), the device keeps what it pinned and lets go only when
// the guest unmaps the IOVA (Invalidate, from the dma_unmap listener), when
// the function is reset or closed (Clear), or to stay under its page budget.
//
// Pins are taken a block at a time (kBlockPages, aligned in IOVA), read and
// write where the mapping allows both, so a guest that reuses its staging
// buffers pins each page once.
//
// Thread-compatible: the device serialises every call (its exec_mu_).
class GuestPinCache {
 public:
  static constexpr uint64_t kBlockPages = 256;  // 1 MiB: also the copy step.
  static constexpr uint64_t kBlockBytes = kBlockPages * kPageSize;

  // |budget_pages|: pinned pages kept at most (least recently used go
  // first); at least one block.
  GuestPinCache(DmaAccess& dma, uint64_t budget_pages);
  GuestPinCache(const GuestPinCache&) = delete;
  GuestPinCache& operator=(const GuestPinCache&) = delete;

  // Host memory behind guest [iova, iova + len) for access |prot|, pinned
  // until the next Invalidate/Clear/Find: the longest host-contiguous run
  // from |iova|, 1 to |len| bytes, never crossing a block. Errors: those of
  // DmaAccess::PinPages (EFAULT not mapped, EPERM no such right, ...).
  Result<std::span<std::byte>> Find(uint64_t iova, uint64_t len, uint32_t prot);

  // Unpins every block overlapping [iova, iova + size).
  void Invalidate(uint64_t iova, uint64_t size);
  void Clear();

  uint64_t pinned_pages() const { return pinned_pages_; }
  // Pins taken (misses) and served without one (hits), for tests and stats.
  uint64_t misses() const { return misses_; }
  uint64_t hits() const { return hits_; }

 private:
  struct Block {
    PinnedPages pins;      // Pages [first, first + pins.pages().size()) of the block.
    uint64_t first = 0;    // IOVA of the first pinned page.
    uint32_t prot = 0;
    uint64_t last_use = 0;
    // Every page follows the one before in host memory (a guest RAM mapping
    // always does): then a run is the whole rest of the request.
    bool contiguous = false;
  };

  Result<Block*> PinBlock(uint64_t block_iova, uint64_t page_iova, uint64_t end, uint32_t prot);
  void Drop(std::map<uint64_t, Block>::iterator it);
  void EvictDownTo(uint64_t pages);

  DmaAccess& dma_;
  const uint64_t budget_pages_;
  std::map<uint64_t, Block> blocks_;  // By block IOVA.
  uint64_t pinned_pages_ = 0;
  uint64_t clock_ = 0;
  uint64_t misses_ = 0;
  uint64_t hits_ = 0;
};

}  // namespace umdev::vendor::gpu
