// UniqueFd: close() on reset.
#include "umdev/common/unique_fd.h"

#include <unistd.h>

namespace umdev {

void UniqueFd::Reset(int fd) {
  const int old = std::exchange(fd_, fd);
  if (old >= 0) ::close(old);
}

}  // namespace umdev
