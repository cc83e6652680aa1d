// GuestPinCache: pins kept per 1 MiB block of guest IOVA.
#include "umdev/vendor/gpu/guest_pin_cache.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <utility>

#include "umdev/mdev_core/dma.h"

namespace umdev::vendor::gpu {

GuestPinCache::GuestPinCache(DmaAccess& dma, uint64_t budget_pages)
    : dma_(dma), budget_pages_(std::max(budget_pages, kBlockPages)) {}

Result<std::span<std::byte>> GuestPinCache::Find(uint64_t iova, uint64_t len, uint32_t prot) {
  if (len == 0) return std::span<std::byte>();
  const uint64_t block_iova = iova & ~(kBlockBytes - 1);
  const uint64_t page = iova & ~(kPageSize - 1);
  // The part of the request inside this block, in whole pages.
  const uint64_t want = std::min(len, block_iova + kBlockBytes - iova);
  const uint64_t want_end = (iova + want + kPageSize - 1) & ~(kPageSize - 1);

  Block* block = nullptr;
  if (auto it = blocks_.find(block_iova); it != blocks_.end()) {
    const Block& b = it->second;
    const uint64_t end = b.first + b.pins.pages().size() * kPageSize;
    if (b.first <= page && page < end && (prot & ~b.prot) == 0) {
      block = &it->second;
      ++hits_;
    } else {
      Drop(it);  // Another part of the block, or a right it lacks: pin anew.
    }
  }
  if (block == nullptr) {
    UMDEV_ASSIGN_OR_RETURN(block, PinBlock(block_iova, page, want_end, prot));
    ++misses_;
  }
  block->last_use = ++clock_;

  const std::vector<void*>& pages = block->pins.pages();
  const uint64_t end = block->first + pages.size() * kPageSize;
  const uint64_t avail = std::min(want, end - iova);
  size_t index = (page - block->first) / kPageSize;
  auto* host = static_cast<std::byte*>(pages[index]) + (iova - page);
  if (block->contiguous) return std::span<std::byte>(host, avail);
  // Extend over pages that follow in host memory too: one memcpy for the run.
  uint64_t run = std::min(avail, kPageSize - (iova - page));
  while (run < avail && index + 1 < pages.size() &&
         pages[index + 1] == static_cast<std::byte*>(pages[index]) + kPageSize) {
    ++index;
    run = std::min(avail, run + kPageSize);
  }
  return std::span<std::byte>(host, run);
}

Result<GuestPinCache::Block*> GuestPinCache::PinBlock(uint64_t block_iova, uint64_t page,
                                                      uint64_t end, uint32_t prot) {
  constexpr uint32_t kBoth = kProtRead | kProtWrite;
  struct Attempt {
    uint64_t first;
    uint64_t npage;
    uint32_t prot;
  };
  // Widest first: the whole block with both rights serves any later use of
  // it; a block the mapping does not cover (EFAULT) or does not allow both
  // rights on (EPERM) narrows to the pages and the right this copy needs.
  const std::array<Attempt, 4> attempts = {{
      {block_iova, kBlockPages, kBoth},
      {block_iova, kBlockPages, prot},
      {page, (end - page) / kPageSize, kBoth},
      {page, (end - page) / kPageSize, prot},
  }};
  Error last{EFAULT, "gpu: no pin attempted"};
  bool evicted_all = false;
  for (size_t i = 0; i < attempts.size(); ++i) {
    const Attempt& a = attempts[i];
    if (i % 2 == 1 && a.prot == kBoth) continue;  // Same as the attempt before.
    EvictDownTo(budget_pages_ - std::min(budget_pages_, a.npage));
    auto pinned = PinnedPages::Pin(dma_, a.first, static_cast<int>(a.npage), a.prot);
    if (pinned.has_value()) {
      const std::vector<void*>& pages = pinned->pages();
      bool contiguous = true;
      for (size_t p = 1; p < pages.size() && contiguous; ++p) {
        contiguous = pages[p] == static_cast<std::byte*>(pages[p - 1]) + kPageSize;
      }
      auto [it, inserted] = blocks_.try_emplace(block_iova);
      it->second = Block{.pins = std::move(*pinned), .first = a.first, .prot = a.prot,
                         .contiguous = contiguous};
      pinned_pages_ += a.npage;
      return &it->second;
    }
    last = pinned.error();
    if (last.code == ENOMEM && !evicted_all && !blocks_.empty()) {
      // Over the locked-memory limit: what this cache holds goes first.
      Clear();
      evicted_all = true;
      --i;
      continue;
    }
    if (last.code != EFAULT && last.code != EPERM) break;
  }
  return std::unexpected(std::move(last));
}

void GuestPinCache::Invalidate(uint64_t iova, uint64_t size) {
  if (size == 0) return;
  const uint64_t last = iova + std::min(size - 1, ~uint64_t{0} - iova);  // Inclusive.
  for (auto it = blocks_.begin(); it != blocks_.end();) {
    const Block& b = it->second;
    const uint64_t b_last = b.first + b.pins.pages().size() * kPageSize - 1;
    if (b.first <= last && iova <= b_last) {
      pinned_pages_ -= b.pins.pages().size();
      it = blocks_.erase(it);
    } else {
      ++it;
    }
  }
}

void GuestPinCache::Clear() {
  blocks_.clear();
  pinned_pages_ = 0;
}

void GuestPinCache::Drop(std::map<uint64_t, Block>::iterator it) {
  pinned_pages_ -= it->second.pins.pages().size();
  blocks_.erase(it);
}

void GuestPinCache::EvictDownTo(uint64_t pages) {
  while (pinned_pages_ > pages && !blocks_.empty()) {
    auto oldest = std::min_element(blocks_.begin(), blocks_.end(), [](const auto& a,
                                                                       const auto& b) {
      return a.second.last_use < b.second.last_use;
    });
    Drop(oldest);
  }
}

}  // namespace umdev::vendor::gpu
