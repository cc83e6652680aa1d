// SharedMemory: slice memory in a memfd, so a vfio-user client can mmap the
// same pages (BAR2) that the engine computes on.
#pragma once

#include <cstdint>
#include <string_view>

#include "umdev/common/error.h"
#include "umdev/common/mapping.h"
#include "umdev/common/unique_fd.h"

namespace umdev::vendor::gpu {

// Move-only; thread-compatible. The mapping is MAP_SHARED over the whole file.
struct SharedMemory {
  UniqueFd fd;
  Mapping mapping;
};

// A zero-filled memfd of |size| bytes (sealed against shrinking, so a client
// that maps it can never see SIGBUS from a truncate), mapped read/write.
Result<SharedMemory> CreateSharedMemory(std::string_view name, uint64_t size);

}  // namespace umdev::vendor::gpu
