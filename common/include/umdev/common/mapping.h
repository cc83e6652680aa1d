// Mapping: the one owner of an mmap()ed range.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <utility>

#include "umdev/common/error.h"

namespace umdev {

// Move-only; munmap()s on destruction. Thread-compatible.
class Mapping {
 public:
  Mapping() = default;
  Mapping(Mapping&& other) noexcept
      : addr_(std::exchange(other.addr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { Reset(); }

  // mmap(NULL, size, prot, flags, fd, offset). Errors: mmap's errno.
  static Result<Mapping> Map(int fd, off_t offset, size_t size, int prot, int flags);

  std::byte* data() const { return static_cast<std::byte*>(addr_); }
  size_t size() const { return size_; }
  std::span<std::byte> bytes() const { return {data(), size_}; }
  bool valid() const { return addr_ != nullptr; }
  void Reset();

 private:
  void* addr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace umdev
