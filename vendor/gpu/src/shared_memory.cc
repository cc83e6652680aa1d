#include "shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

namespace umdev::vendor::gpu {

Result<SharedMemory> CreateSharedMemory(std::string_view name, uint64_t size) {
  SharedMemory out;
  out.fd.Reset(memfd_create(std::string(name).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!out.fd) return FailErrno("memfd_create");
  if (ftruncate(out.fd.get(), static_cast<off_t>(size)) != 0) return FailErrno("ftruncate");
  if (fcntl(out.fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
    return FailErrno("F_ADD_SEALS");
  }
  UMDEV_ASSIGN_OR_RETURN(out.mapping, Mapping::Map(out.fd.get(), 0, size,
                                                   PROT_READ | PROT_WRITE, MAP_SHARED));
  return out;
}

}  // namespace umdev::vendor::gpu
