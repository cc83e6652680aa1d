// Accepting connections when the process may be at its descriptor limit.
#pragma once

#include <string_view>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"

namespace umdev {

// accept4(|listener|, |flags|) that cannot leave a level-triggered poller
// spinning: at the process's fd limit (EMFILE, ENFILE) the pending connection
// is taken into a reserved descriptor and closed at once, so the listener
// stops being readable, and EMFILE is returned. The refusal is logged (at
// most once a second, with |what|); clients already served are untouched.
// Errors: EAGAIN nothing pending; EMFILE/ENFILE as above; accept4's errno.
// Thread-safe.
Result<UniqueFd> AcceptConnection(int listener, int flags, std::string_view what);

// Takes the reserved descriptor now (servers call it as they start), so that
// it is one of the process's fixed descriptors rather than appearing with
// the first client. Idempotent; thread-safe.
void ReserveAcceptDescriptor();

// Raises the soft RLIMIT_NOFILE to the hard limit: one daemon serves every
// device, each costing a few descriptors. Returns the new soft limit.
Result<unsigned long> RaiseFdLimit();

}  // namespace umdev
