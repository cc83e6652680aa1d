// AccessPlan: the checked pieces of one DmaRead/DmaWrite, holding what their copy needs.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "dma_region.h"
#include "umdev/mdev_core/dma.h"

namespace umdev::pinning::detail {

// The part of an access that falls in one mapping.
struct Segment {
  // Set for fd-backed mappings: the copy holds an accessor reference on it.
  std::shared_ptr<DmaRegion> region;
  std::byte* host = nullptr;  // Null: copied through the message channel.
  uint64_t iova = 0;
  uint64_t region_offset = 0;  // Of |iova| inside its mapping.
  size_t buffer_offset = 0;    // Into the caller's buffer.
  size_t length = 0;
  std::shared_ptr<DirtyBits> dirty;  // Writes with tracking on only.
};

// Built under the backend's mu_, used after it is dropped. Nearly every access
// falls in one or two mappings; those need no heap allocation.
// Thread-compatible.
class AccessPlan {
 public:
  AccessPlan() = default;
  AccessPlan(const AccessPlan&) = delete;
  AccessPlan& operator=(const AccessPlan&) = delete;
  ~AccessPlan() {
    for (Segment& segment : segments()) {
      if (segment.region) segment.region->ReleaseAccessor();
    }
  }

  // Takes an accessor reference on |segment.region| when set.
  void Add(Segment segment) {
    if (segment.region) segment.region->accessors.fetch_add(1);
    if (count_ < inline_.size() && overflow_.empty()) {
      inline_[count_++] = std::move(segment);
      return;
    }
    if (overflow_.empty()) {
      for (size_t i = 0; i < count_; ++i) overflow_.push_back(std::move(inline_[i]));
      count_ = 0;
    }
    overflow_.push_back(std::move(segment));
  }
  std::span<Segment> segments() {
    return overflow_.empty() ? std::span<Segment>(inline_.data(), count_)
                             : std::span<Segment>(overflow_);
  }

  DmaMessageChannel* channel = nullptr;  // Set when a segment needs it; counted as a call.

 private:
  std::array<Segment, 2> inline_;
  size_t count_ = 0;
  std::vector<Segment> overflow_;
};

}  // namespace umdev::pinning::detail
