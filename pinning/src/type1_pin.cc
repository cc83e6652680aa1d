// Type1Backend: page pinning (kernel vfio_pin_pages/vfio_unpin_pages) and its accounting.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>

#include "dma_region.h"
#include "page_runs.h"
#include "umdev/common/guest_memory.h"
#include "umdev/common/scope_exit.h"
#include "umdev/pinning/type1_backend.h"

namespace umdev::pinning {
namespace {

using detail::DmaRegion;
using detail::PageRuns;
using detail::PinTarget;


}  // namespace

Result<std::vector<void*>> Type1Backend::PinPages(DmaUnmapListener& owner, uint64_t iova,
                                                  int npage, uint32_t prot) {
  if (npage < 1 || iova % kPageSize != 0 || prot == 0 || (prot & ~kProtMask) != 0) {
    return Fail(EINVAL, fmt::format("pin {} pages at {:#x} prot {:#x}: invalid", npage, iova,
                                    prot));
  }
  if (npage > kMaxPinPages) {
    return Fail(E2BIG, fmt::format("pin {} pages at {:#x}: more than {}", npage, iova,
                                   kMaxPinPages));
  }
  const uint64_t length = static_cast<uint64_t>(npage) * kPageSize;
  if (iova + length - 1 < iova) {
    return Fail(EINVAL, fmt::format("pin {} pages at {:#x}: wraps", npage, iova));
  }
  MutexLock lock(mu_);
  if (!IsAttachedLocked(&owner)) {
    return Fail(EINVAL, fmt::format("pin at {:#x}: listener {} is not attached", iova,
                                    fmt::ptr(&owner)));
  }
  UMDEV_ASSIGN_OR_RETURN(std::vector<PinTarget> targets, PlanPinLocked(iova, npage, prot));
  // A page past the end of the client's file (truncated after DMA_MAP) has
  // no backing: the kernel's EFAULT for an unbacked vaddr. Probed, not
  // inferred from mlock(), which says ENOMEM for it (and, under ASan, which
  // makes mlock() a no-op, nothing at all). Pages pinned for the first time
  // are checked a run at a time (resident, or populated by the kernel: a
  // trapped fault per absent page made a first pin cost ten times an
  // mlock); the others, and all of them when that fails (to name the page
  // without backing, or where the kernel cannot populate), are read under
  // the SIGBUS guard.
  PageRuns first_pins;
  for (const PinTarget& target : targets) {
    if (target.first_pin) first_pins.Add(target.host);
  }
  const bool populated = first_pins.EnsureResident<kMaxPinPages>() == 0;
  for (const PinTarget& target : targets) {
    // Pinned pages are resident: reading one costs nothing, no fault.
    if (populated && target.first_pin) continue;
    if (!ProbeGuestMemory(target.host, kPageSize).has_value()) {
      return Fail(EFAULT, fmt::format("pin {} pages at {:#x}: page {:#x} has no backing", npage,
                                      iova, iova + (&target - targets.data()) * kPageSize));
    }
  }

  // Only the first pin of a page locks memory, so only it is charged (type1
  // accounts a pfn once, however many vendors pin it).
  const uint64_t charge = static_cast<uint64_t>(std::count_if(
                              targets.begin(), targets.end(),
                              [](const PinTarget& t) { return t.first_pin; })) *
                          kPageSize;
  if (charge > limits_.container_locked_limit - locked_bytes_) {
    return Fail(ENOMEM, fmt::format("pin {} pages at {:#x}: container locked limit {:#x} "
                                    "reached ({:#x} locked)",
                                    npage, iova, limits_.container_locked_limit, locked_bytes_));
  }
  UMDEV_TRY(account_->Charge(charge));
  ScopeExit uncharge([&] { account_->Uncharge(charge); });
  // mlock() both faults the pages in (the kernel's GUP) and keeps them
  // resident. It runs under mu_: an unmap must not slip in between.
  if (const int error = first_pins.LockAll(); error != 0) {
    return Fail(ENOMEM, fmt::format("pin {} pages at {:#x}: mlock: {}", npage, iova,
                                    ErrnoName(error)));
  }
  uncharge.Dismiss();
  locked_bytes_ += charge;

  std::vector<void*> addresses;
  addresses.reserve(targets.size());
  for (const PinTarget& target : targets) {
    detail::PinnedPage& page = target.region->pins[target.index];
    ++page.total;
    auto held = std::find_if(page.owners.begin(), page.owners.end(),
                             [&](const auto& entry) { return entry.first == &owner; });
    if (held != page.owners.end()) {
      ++held->second;
    } else {
      page.owners.emplace_back(&owner, 1);
    }
    addresses.push_back(target.host);
  }
  return addresses;
}

Result<std::vector<PinTarget>> Type1Backend::PlanPinLocked(uint64_t iova, int npage,
                                                           uint32_t prot) const {
  std::vector<PinTarget> targets;
  targets.reserve(static_cast<size_t>(npage));
  DmaRegion* region = nullptr;
  for (int i = 0; i < npage; ++i) {
    const uint64_t page_iova = iova + static_cast<uint64_t>(i) * kPageSize;
    if (region == nullptr || page_iova > region->last()) region = FindLocked(page_iova);
    // Message-channel memory has no host address to hand out.
    if (region == nullptr || !region->has_fd()) {
      return Fail(EFAULT, fmt::format("pin at {:#x}: page {:#x} is not mapped with an fd", iova,
                                      page_iova));
    }
    if ((region->prot & prot) != prot) {
      return Fail(EPERM, fmt::format("pin at {:#x} prot {:#x}: mapping [{:#x}, +{:#x}) allows "
                                     "{:#x}",
                                     iova, prot, region->iova, region->size, region->prot));
    }
    const uint64_t index = (page_iova - region->iova) / kPageSize;
    targets.push_back(PinTarget{.region = region,
                                .index = index,
                                .host = region->mapping.data() + index * kPageSize,
                                .first_pin = !region->pins.contains(index)});
  }
  return targets;
}

void Type1Backend::UnpinPages(DmaUnmapListener& owner, uint64_t iova, int npage) {
  if (npage < 1 || npage > kMaxPinPages || iova % kPageSize != 0 ||
      iova + static_cast<uint64_t>(npage) * kPageSize - 1 < iova) {
    spdlog::debug("type1: unpin of {} pages at {:#x}: invalid, ignored", npage, iova);
    return;
  }
  MutexLock lock(mu_);
  PageRuns unlocked;
  uint64_t released = 0;
  DmaRegion* region = nullptr;
  for (int i = 0; i < npage; ++i) {
    const uint64_t page_iova = iova + static_cast<uint64_t>(i) * kPageSize;
    if (region == nullptr || page_iova > region->last()) region = FindLocked(page_iova);
    if (region == nullptr) {
      spdlog::debug("type1: unpin of unmapped page {:#x} ignored", page_iova);
      continue;
    }
    const uint64_t index = (page_iova - region->iova) / kPageSize;
    if (DropPinLocked(*region, index, owner, /*all=*/false)) {
      unlocked.Add(region->mapping.data() + index * kPageSize);
      released += kPageSize;
    }
  }
  unlocked.UnlockAll();
  UnchargeLocked(released);
}

bool Type1Backend::DropPinLocked(DmaRegion& region, uint64_t index,
                                 const DmaUnmapListener& owner, bool all) {
  auto page = region.pins.find(index);
  auto held = page == region.pins.end()
                  ? std::vector<std::pair<DmaUnmapListener*, uint32_t>>::iterator{}
                  : std::find_if(page->second.owners.begin(), page->second.owners.end(),
                                 [&](const auto& entry) { return entry.first == &owner; });
  if (page == region.pins.end() || held == page->second.owners.end()) {
    // The kernel WARNs here; a device unpinning twice is its own bug.
    spdlog::debug("type1: unpin of page {:#x} not pinned by listener {} ignored",
                  region.iova + index * kPageSize, fmt::ptr(&owner));
    return false;
  }
  const uint32_t dropped = all ? held->second : 1;
  held->second -= dropped;
  page->second.total -= dropped;
  if (held->second == 0) page->second.owners.erase(held);
  if (page->second.total != 0) return false;
  // type1 reports every page pinned since the last report as dirty.
  if (region.dirty) region.dirty->Mark(index, index + 1);
  region.pins.erase(page);
  return true;
}

uint64_t Type1Backend::ReleaseOwnerPinsLocked(DmaRegion& region, const DmaUnmapListener& owner) {
  std::vector<uint64_t> held;
  for (const auto& [index, page] : region.pins) {
    if (std::any_of(page.owners.begin(), page.owners.end(),
                    [&](const auto& entry) { return entry.first == &owner; })) {
      held.push_back(index);
    }
  }
  PageRuns unlocked;
  uint64_t released = 0;
  for (uint64_t index : held) {
    if (DropPinLocked(region, index, owner, /*all=*/true)) {
      unlocked.Add(region.mapping.data() + index * kPageSize);
      released += kPageSize;
    }
  }
  unlocked.UnlockAll();
  return released;
}

void Type1Backend::UnchargeLocked(uint64_t bytes) {
  if (bytes == 0) return;
  locked_bytes_ -= bytes;
  account_->Uncharge(bytes);
  changed_.NotifyAll();
}

}  // namespace umdev::pinning
