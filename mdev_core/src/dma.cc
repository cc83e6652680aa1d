// CheckGuestMemoryFd: what a DMA_MAP's fd must be before it is mapped.
#include <fcntl.h>
#include <sys/stat.h>

#include <fmt/format.h>

#include "umdev/mdev_core/dma.h"

namespace umdev {

Result<void> CheckGuestMemoryFd(const DmaMapRequest& request) {
  const auto context = [&](std::string_view why) {
    return fmt::format("map [{:#x}, +{:#x}) offset {:#x}: {}", request.iova, request.size,
                       request.offset, why);
  };
  struct stat st {};
  if (::fstat(request.fd.get(), &st) != 0) return FailErrno(context("fstat"));
  if (!S_ISREG(st.st_mode)) {
    return Fail(EINVAL, context("the fd is not a memory file (memfd, tmpfs or hugetlbfs)"));
  }
  if (st.st_size < 0 || request.offset + request.size > static_cast<uint64_t>(st.st_size)) {
    return Fail(EINVAL, context(fmt::format("the file has only {:#x} bytes", st.st_size)));
  }
  const int seals = ::fcntl(request.fd.get(), F_GET_SEALS);
  if (seals >= 0 && (seals & F_SEAL_SHRINK) == 0 && (seals & F_SEAL_SEAL) == 0) {
    return Fail(EINVAL, context("the memfd can be sealed but is not sealed against shrinking "
                                "(F_SEAL_SHRINK; QEMU: seal=on)"));
  }
  return {};
}


}  // namespace umdev
