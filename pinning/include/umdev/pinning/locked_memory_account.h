// LockedMemoryAccount: the daemon-wide budget of memory locked by page pins.
#pragma once

#include <atomic>
#include <cstdint>

#include "umdev/common/error.h"

namespace umdev::pinning {

// The per-daemon counterpart of the kernel's mm->locked_vm check against
// RLIMIT_MEMLOCK: every Type1Backend a Type1Driver creates charges the first
// pin of each page here and uncharges it when the last pin goes.
// Thread-safe: charged and uncharged from any thread that pins or unmaps.
class LockedMemoryAccount {
 public:
  // The RLIMIT_MEMLOCK soft limit in bytes; UINT64_MAX when unlimited.
  static uint64_t DefaultLimit();

  LockedMemoryAccount() : LockedMemoryAccount(DefaultLimit()) {}
  explicit LockedMemoryAccount(uint64_t limit_bytes) : limit_(limit_bytes) {}
  LockedMemoryAccount(const LockedMemoryAccount&) = delete;
  LockedMemoryAccount& operator=(const LockedMemoryAccount&) = delete;

  // Adds |bytes| to the usage, all or nothing.
  // Errors: ENOMEM usage would exceed the limit.
  Result<void> Charge(uint64_t bytes);
  // Returns |bytes| charged earlier; never underflows (a bug is logged instead).
  void Uncharge(uint64_t bytes);

  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_.load(std::memory_order_relaxed); }
  // A lower limit only refuses new charges; memory already locked stays locked.
  void set_limit(uint64_t limit_bytes) { limit_.store(limit_bytes, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> limit_;
  std::atomic<uint64_t> used_{0};
};

}  // namespace umdev::pinning
