// Daemon configuration: the embedded default and validation.
#include <fmt/format.h>

#include "umdev/daemon/daemon.h"

namespace umdev::daemon {
namespace {

// Parents appear here as their vendor drivers land (serial, GPU slicing).
constexpr std::string_view kDefaultConfig = R"({
  "log_level": "info",
  "limits": { "removal_timeout_ms": 10000, "max_dma_mappings": 65535 },
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
        if (!amount.is_number_unsigned()) {
          return Fail(EINVAL, fmt::format("config: limit \"{}\" must be a non-negative integer", limit));
        }
        const uint64_t n = amount.get<uint64_t>();
        if (limit == "removal_timeout_ms") {
          config.removal_timeout = std::chrono::milliseconds(n);
        } else if (limit == "locked_memory_bytes") {
          config.locked_memory_bytes = n;
        } else if (limit == "container_locked_bytes") {
          config.container_locked_bytes = n;
        } else if (limit == "max_dma_mappings" && n > 0 && n <= 65535) {
          config.max_dma_mappings = static_cast<uint32_t>(n);
        } else {
          return Fail(EINVAL, fmt::format("config: unknown or out-of-range limit \"{}\"", limit));
        }
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
