// CopyReaders: who is copying through a translation cache right now, kept
// so that the copy itself pays no locked instruction. A reader marks itself
// with a plain store; an invalidator, after publishing its new epoch, makes
// every thread of the process execute a full barrier (membarrier's private
// expedited command) and then waits for the marked readers to finish. That
// is the asymmetric form of Dekker's handshake: either a reader's mark is
// seen by the invalidator, or the reader sees the new epoch.
#pragma once

#include <atomic>

namespace umdev::pinning::detail {

// One per thread that has copied; lives in a process-wide list. Thread-safe.
struct CopyReader {
  std::atomic<bool> active{false};
  CopyReader* next = nullptr;
};

// True where the kernel has no private expedited membarrier (or under TSan,
// which cannot see one): readers then fence themselves.
extern bool copy_readers_need_fence;

// Registers a record for the calling thread (takes a lock; the record is
// unlinked when the thread ends). Callers keep the pointer in a
// thread_local of their own, so that later copies only load it.
CopyReader* RegisterCopyReader();

// Brackets a copy made through a cached translation. After Enter(), the
// caller checks its epoch; after Exit() it touches nothing it translated.
inline void EnterCopy(CopyReader& reader) {
  if (copy_readers_need_fence) {
    // Ordered before the epoch load (both sequentially consistent).
    reader.active.store(true, std::memory_order_seq_cst);
  } else {
    // The CPU-level barrier comes from the invalidator's membarrier; this
    // only keeps the compiler from moving the epoch load above the mark.
    reader.active.store(true, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
}
inline void ExitCopy(CopyReader& reader) { reader.active.store(false, std::memory_order_release); }

// Called after an epoch was published (sequentially consistent store):
// returns once every copy that could have missed it has ended.
void WaitForCopyReaders();

}  // namespace umdev::pinning::detail
