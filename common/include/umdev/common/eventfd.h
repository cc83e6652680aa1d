// Eventfds that come from clients: recognising them, and signalling and
// draining them so that no daemon thread can ever block on one.
#pragma once

#include "umdev/common/error.h"

namespace umdev {

// Whether |fd| is an eventfd: what the kernel's eventfd_ctx_fdget() accepts
// for VFIO triggers and resamplers.
bool IsEventFd(int fd);

// Checks that |fd| is an eventfd and makes it non-blocking (the open file is
// shared with the client, whose QEMU opens its eventfds non-blocking anyway).
// Errors: EINVAL not an eventfd (a pipe, a socket, a memfd...); fcntl's errno.
Result<void> AdoptClientEventFd(int fd, const char* what);

// Adds 1 to the counter, as the kernel's eventfd_signal(). A counter at its
// maximum already has an event pending, so nothing is lost by not adding. A
// client that makes the fd blocking again cannot stall the caller: a write
// that has not finished after a few milliseconds is interrupted.
void SignalEventFd(int fd);

// Reads and clears the counter without blocking; false if it was zero.
bool DrainEventFd(int fd);

}  // namespace umdev
