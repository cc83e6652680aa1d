// UniqueFd: the one owner of a file descriptor.
#pragma once

#include <utility>

namespace umdev {

// Move-only; closes its descriptor once. Thread-compatible.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }  // Borrow; do not store.
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  [[nodiscard]] int Release() { return std::exchange(fd_, -1); }
  // Closes the current descriptor (EINTR is not retried: Linux has closed it).
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

}  // namespace umdev
