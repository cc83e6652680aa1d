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
  // Faults every run in for reading inside the kernel (MADV_POPULATE_READ,
  // Linux 5.14): one call per run instead of a trapped fault per page, and
  // EFAULT where a page has no backing (past the end of its file). Returns 0
  // or madvise's errno (EINVAL where the kernel lacks it).
  int PopulateAll() const {
    for (const Run& run : runs_) {
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
