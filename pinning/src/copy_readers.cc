#include "copy_readers.h"

#include <linux/membarrier.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>
#include <thread>

namespace umdev::pinning::detail {

namespace {

std::mutex registry_mu;
CopyReader* registry_head = nullptr;  // Guarded by registry_mu.

int Membarrier(int command) { return static_cast<int>(::syscall(SYS_membarrier, command, 0)); }

// Registers the process for private expedited membarriers, once; false
// where the kernel cannot (readers then fence themselves).
bool RegisterMembarrier() {
#if defined(__SANITIZE_THREAD__)
  return false;
#else
  const int supported = Membarrier(MEMBARRIER_CMD_QUERY);
  if (supported < 0 || (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0 ||
      Membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0) {
    spdlog::info("type1: no private expedited membarrier; DMA copies fence themselves");
    return false;
  }
  return true;
#endif
}

const bool have_membarrier = RegisterMembarrier();

// Unlinks the thread's record when the thread ends.
struct Registration {
  CopyReader reader;
  Registration() {
    std::lock_guard lock(registry_mu);
    reader.next = registry_head;
    registry_head = &reader;
  }
  ~Registration() {
    std::lock_guard lock(registry_mu);
    for (CopyReader** link = &registry_head; *link != nullptr; link = &(*link)->next) {
      if (*link == &reader) {
        *link = reader.next;
        break;
      }
    }
  }
};

}  // namespace

bool copy_readers_need_fence = !have_membarrier;

CopyReader* RegisterCopyReader() {
  thread_local Registration registration;
  return &registration.reader;
}

void WaitForCopyReaders() {
  if (have_membarrier) {
    // Every running thread of the process passes a full barrier: a reader
    // that marked itself before it is seen below, one that marks itself
    // after it reads the new epoch.
    if (Membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0) {
      spdlog::critical("type1: membarrier failed after registration");
      std::abort();
    }
  }
  // Without membarrier, the epoch's store and these loads are sequentially
  // consistent, as are the readers' marks and their epoch loads.
  std::lock_guard lock(registry_mu);
  for (CopyReader* reader = registry_head; reader != nullptr; reader = reader->next) {
    // Copies through the cache are one memcpy of one access.
    while (reader->active.load(std::memory_order_seq_cst)) std::this_thread::yield();
  }
}

}  // namespace umdev::pinning::detail
