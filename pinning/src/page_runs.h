// PageRuns: page addresses coalesced into contiguous runs for mlock()/munlock().
#pragma once

#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <vector>

#include "umdev/mdev_core/dma.h"

namespace umdev::pinning::detail {

// Pins usually come in runs of adjacent pages; one syscall per run instead of
// one per page made pin+unpin of 512 resident pages several times faster.
// Thread-compatible.
class PageRuns {
 public:
  void Add(std::byte* page) {
    if (!runs_.empty() && runs_.back().end == page) {
      runs_.back().end += kPageSize;
    } else {
      runs_.push_back({page, page + kPageSize});
    }
  }
  bool empty() const { return runs_.empty(); }

  // mlock()s every run, all or nothing. Returns 0 or mlock's errno.
  int LockAll() const {
    for (size_t i = 0; i < runs_.size(); ++i) {
      if (::mlock(runs_[i].begin, Length(runs_[i])) != 0) {
        const int saved = errno;
        for (size_t j = 0; j < i; ++j) ::munlock(runs_[j].begin, Length(runs_[j]));
        return saved;
      }
    }
    return 0;
  }
  void UnlockAll() const {
    for (const Run& run : runs_) ::munlock(run.begin, Length(run));
  }
  // Makes sure every page of every run is in memory, which also proves it
  // has backing. A run whose pages are all resident (mincore) needs nothing:
  // a page past the end of its file is never resident. Any other run is
  // faulted in for reading inside the kernel (MADV_POPULATE_READ, Linux
  // 5.14): one call instead of a trapped fault per page, and EFAULT where a
  // page has no backing. Returns 0 or the failing call's errno (EINVAL
  // where the kernel cannot populate). Runs are at most |max_pages| long.
  template <size_t max_pages>
  int EnsureResident() const {
    for (const Run& run : runs_) {
      unsigned char resident[max_pages];
      const size_t pages = Length(run) / kPageSize;
      bool all = pages <= max_pages && ::mincore(run.begin, Length(run), resident) == 0;
      for (size_t i = 0; all && i < pages; ++i) all = (resident[i] & 1) != 0;
      if (all) continue;
      if (::madvise(run.begin, Length(run), MADV_POPULATE_READ) != 0) return errno;
    }
    return 0;
  }

 private:
  struct Run {
    std::byte* begin;
    std::byte* end;
  };
  static size_t Length(const Run& run) { return static_cast<size_t>(run.end - run.begin); }

  std::vector<Run> runs_;
};

}  // namespace umdev::pinning::detail
