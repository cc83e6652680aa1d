// What the QEMU harnesses (QemuQtest, QemuGuest) share: where QEMU lives in
// the root, a deadline as poll()'s timeout, and a wait status in words.
#pragma once

#include <sys/wait.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <string>

namespace umdev::test::detail {

inline constexpr const char* kQemuInRoot = "/usr/bin/qemu-system-x86_64";

// Milliseconds left until |deadline|, clamped to poll()'s range.
inline int RemainingMs(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, INT_MAX));
}

inline std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
  return fmt::format("wait status {:#x}", status);
}

}  // namespace umdev::test::detail
