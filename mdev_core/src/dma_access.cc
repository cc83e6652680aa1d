// PinnedPages: an RAII pin through DmaAccess.
#include "umdev/mdev_core/dma_access.h"

#include <utility>

#include "umdev/mdev_core/dma.h"

namespace umdev {

Result<PinnedPages> PinnedPages::Pin(DmaAccess& dma, uint64_t iova, int npage, uint32_t prot) {
  UMDEV_ASSIGN_OR_RETURN(std::vector<void*> pages, dma.PinPages(iova, npage, prot));
  PinnedPages pinned;
  pinned.dma_ = &dma;
  pinned.iova_ = iova;
  pinned.pages_ = std::move(pages);
  return pinned;
}

PinnedPages::PinnedPages(PinnedPages&& other) noexcept
    : dma_(std::exchange(other.dma_, nullptr)),
      iova_(other.iova_),
      pages_(std::exchange(other.pages_, {})) {}

PinnedPages& PinnedPages::operator=(PinnedPages&& other) noexcept {
  if (this != &other) {
    Reset();
    dma_ = std::exchange(other.dma_, nullptr);
    iova_ = other.iova_;
    pages_ = std::exchange(other.pages_, {});
  }
  return *this;
}

bool PinnedPages::Overlaps(uint64_t iova, uint64_t size) const {
  const uint64_t end = iova_ + pages_.size() * kPageSize;
  return !pages_.empty() && iova < end && iova_ < iova + size;
}

void PinnedPages::Reset() {
  if (dma_ != nullptr && !pages_.empty()) {
    dma_->UnpinPages(iova_, static_cast<int>(pages_.size()));
  }
  dma_ = nullptr;
  pages_.clear();
}

}  // namespace umdev
