// UnixAddress: a sockaddr_un for a filesystem path, length-checked.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <string>

#include "umdev/common/error.h"

namespace umdev {

// Errors: ENAMETOOLONG |path| does not fit sun_path with its terminator.
Result<sockaddr_un> UnixAddress(const std::string& path);

}  // namespace umdev
