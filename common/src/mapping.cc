// Mapping: mmap()/munmap() ownership.
#include "umdev/common/mapping.h"

#include <sys/mman.h>

#include <fmt/format.h>

namespace umdev {

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    Reset();
    addr_ = std::exchange(other.addr_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

Result<Mapping> Mapping::Map(int fd, off_t offset, size_t size, int prot, int flags) {
  void* addr = ::mmap(nullptr, size, prot, flags, fd, offset);
  if (addr == MAP_FAILED) {
    return FailErrno(fmt::format("mmap fd {} offset {:#x} size {:#x}", fd, offset, size));
  }
  Mapping mapping;
  mapping.addr_ = addr;
  mapping.size_ = size;
  return mapping;
}

void Mapping::Reset() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

}  // namespace umdev
