// The control protocol's sysfs-* commands (see protocol.h).
#pragma once

#include <nlohmann/json.hpp>

#include <string_view>

#include "umdev/common/error.h"
#include "umdev/sysfs/tree.h"

namespace umdev::control {

// Answers sysfs-stat, sysfs-list, sysfs-read and sysfs-write. Errors: EINVAL
// an unknown sysfs command or a missing field; the tree's errnos.
Result<nlohmann::json> SysfsCommand(const sysfs::Tree& tree, std::string_view cmd,
                                    const nlohmann::json& request);

}  // namespace umdev::control
