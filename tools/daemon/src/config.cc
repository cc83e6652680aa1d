// Daemon configuration: the embedded default and validation.
#include <fmt/format.h>

#include "umdev/daemon/daemon.h"

namespace umdev::daemon {
namespace {

// The "vfio_user" object: socket ownership, peer allow-list, loop threads.
Result<void> ParseVfioUser(const nlohmann::json& value, VfioUserConfig& out) {
  if (!value.is_object()) return Fail(EINVAL, "config: \"vfio_user\" must be an object");
  for (const auto& [key, item] : value.items()) {
    auto unsigned_value = [&](uint64_t max) -> Result<uint64_t> {
      if (!item.is_number_unsigned() || item.get<uint64_t>() > max) {
        return Fail(EINVAL, fmt::format("config: vfio_user \"{}\" must be an integer in 0..{}",
                                        key, max));
      }
      return item.get<uint64_t>();
    };
    if (key == "threads") {
      UMDEV_ASSIGN_OR_RETURN(uint64_t n, unsigned_value(64));
      if (n == 0) return Fail(EINVAL, "config: vfio_user \"threads\" must be at least 1");
      out.threads = static_cast<unsigned>(n);
    } else if (key == "message_timeout_ms") {
      UMDEV_ASSIGN_OR_RETURN(uint64_t n, unsigned_value(600000));
      if (n == 0) return Fail(EINVAL, "config: vfio_user \"message_timeout_ms\" must be positive");
      out.message_timeout = std::chrono::milliseconds(n);
    } else if (key == "socket_uid") {
      UMDEV_ASSIGN_OR_RETURN(uint64_t n, unsigned_value(0xfffffffe));
      out.socket_uid = static_cast<uid_t>(n);
    } else if (key == "socket_gid") {
      UMDEV_ASSIGN_OR_RETURN(uint64_t n, unsigned_value(0xfffffffe));
      out.socket_gid = static_cast<gid_t>(n);
    } else if (key == "allowed_uids") {
      if (!item.is_array()) return Fail(EINVAL, "config: vfio_user \"allowed_uids\" must be an array");
      for (const auto& uid : item) {
        if (!uid.is_number_unsigned() || uid.get<uint64_t>() > 0xfffffffe) {
          return Fail(EINVAL, "config: vfio_user \"allowed_uids\" holds uids");
        }
        out.allowed_uids.push_back(static_cast<uid_t>(uid.get<uint64_t>()));
      }
    } else {
      return Fail(EINVAL, fmt::format("config: unknown vfio_user key \"{}\"", key));
    }
  }
  return {};
}

// Parents appear here as their vendor drivers land (GPU slicing next).
constexpr std::string_view kDefaultConfig = R"({
  "log_level": "info",
  "limits": { "removal_timeout_ms": 10000, "max_dma_mappings": 65535 },
  "vfio_user": { "threads": 2, "message_timeout_ms": 5000 },
  "parents": [ { "driver": "mtty" } ]
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
    } else if (key == "sysfs_mount") {
      if (!value.is_string()) return Fail(EINVAL, "config: \"sysfs_mount\" must be a string");
      config.sysfs_mount = value.get<std::string>();
    } else if (key == "vfio_user") {
      UMDEV_TRY(ParseVfioUser(value, config.vfio_user));
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
