// Logging set-up: one spdlog logger for the whole process.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

#include "umdev/common/error.h"

namespace umdev {

// Sets the default logger's level from "trace", "debug", "info", "warn",
// "error", "critical" or "off". Errors: EINVAL for any other name.
Result<void> SetLogLevel(std::string_view level);

}  // namespace umdev
