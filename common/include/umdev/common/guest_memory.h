// Copies to and from memory a client mapped into the daemon (guest RAM from a
// DMA_MAP fd), surviving the client truncating the file under the mapping.
#pragma once

#include <cstddef>

#include "umdev/common/error.h"

namespace umdev {

// mlock() does not stop a client from truncating its memfd or tmpfs file, and
// a load or store past the new end raises SIGBUS. These copies run with a
// per-thread recovery point: a SIGBUS inside one ends that copy with EFAULT
// (part of it may have been done) and the process goes on. A SIGBUS anywhere
// else keeps its usual meaning. Any thread; reentrant per thread.
//
// |dst| or |src| (or both) may be guest memory.
Result<void> CopyGuestMemory(void* dst, const void* src, size_t size);
// Reads one byte of every page of [address, address + size). Errors: EFAULT
// a page has no backing (past the end of the file).
Result<void> ProbeGuestMemory(const void* address, size_t size);

}  // namespace umdev
