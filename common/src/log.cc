// Logging set-up.
#include "umdev/common/log.h"

#include <fmt/format.h>
#include <string>

namespace umdev {

Result<void> SetLogLevel(std::string_view level) {
  const auto parsed = spdlog::level::from_str(std::string(level));
  // from_str() maps unknown names to "off"; only "off" itself may mean off.
  if (parsed == spdlog::level::off && level != "off") {
    return Fail(EINVAL, fmt::format("unknown log level '{}'", level));
  }
  spdlog::set_level(parsed);
  return {};
}

}  // namespace umdev
