// Daemon configuration: the embedded default and validation.
#include <fmt/format.h>

#include "umdev/daemon/daemon.h"

namespace umdev::daemon {
namespace {

// Parents appear here as their vendor drivers land (serial, GPU slicing).
constexpr std::string_view kDefaultConfig = R"({
  "log_level": "info",
  "limits": { "removal_timeout_ms": 10000 },
  "parents": []
}
)";

}  // namespace

std::string_view DefaultConfigText() { return kDefaultConfig; }

Result<Config> ParseConfig(std::string_view text) {
  const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return Fail(EINVAL, "config is not valid JSON");
  if (!json.is_object()) return Fail(EINVAL, "config must be a JSON object");
  Config config;
  for (const auto& [key, value] : json.items()) {
    if (key == "log_level") {
      if (!value.is_string()) return Fail(EINVAL, "config: \"log_level\" must be a string");
      config.log_level = value.get<std::string>();
    } else if (key == "limits") {
      if (!value.is_object()) return Fail(EINVAL, "config: \"limits\" must be an object");
      for (const auto& [limit, amount] : value.items()) {
        if (limit != "removal_timeout_ms") {
          return Fail(EINVAL, fmt::format("config: unknown limit \"{}\"", limit));
        }
        if (!amount.is_number_unsigned()) {
          return Fail(EINVAL, "config: \"removal_timeout_ms\" must be a non-negative integer");
        }
        config.removal_timeout = std::chrono::milliseconds(amount.get<uint64_t>());
      }
    } else if (key == "parents") {
      if (!value.is_array()) return Fail(EINVAL, "config: \"parents\" must be an array");
      for (const auto& entry : value) {
        if (!entry.is_object() || !entry.contains("driver") || !entry["driver"].is_string()) {
          return Fail(EINVAL, "config: each parent needs a string \"driver\"");
        }
        config.parents.push_back(entry);
      }
    } else {
      return Fail(EINVAL, fmt::format("config: unknown key \"{}\"", key));
    }
  }
  return config;
}

}  // namespace umdev::daemon
