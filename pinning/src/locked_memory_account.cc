// LockedMemoryAccount: lock-free charge and uncharge against one limit.
#include "umdev/pinning/locked_memory_account.h"

#include <sys/resource.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <limits>

namespace umdev::pinning {

uint64_t LockedMemoryAccount::DefaultLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_MEMLOCK, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return std::numeric_limits<uint64_t>::max();
  }
  return limit.rlim_cur;
}

Result<void> LockedMemoryAccount::Charge(uint64_t bytes) {
  uint64_t used = used_.load(std::memory_order_relaxed);
  do {
    const uint64_t limit = limit_.load(std::memory_order_relaxed);
    if (bytes > limit || used > limit - bytes) {
      return Fail(ENOMEM, fmt::format("locked memory: {:#x} bytes in use, {:#x} more exceeds "
                                      "the limit {:#x}",
                                      used, bytes, limit));
    }
  } while (!used_.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
  return {};
}

void LockedMemoryAccount::Uncharge(uint64_t bytes) {
  uint64_t used = used_.load(std::memory_order_relaxed);
  uint64_t next = 0;
  do {
    if (bytes > used) {
      spdlog::error("locked memory: uncharge of {:#x} bytes exceeds the {:#x} in use", bytes,
                    used);
      next = 0;
    } else {
      next = used - bytes;
    }
  } while (!used_.compare_exchange_weak(used, next, std::memory_order_relaxed));
}

}  // namespace umdev::pinning
