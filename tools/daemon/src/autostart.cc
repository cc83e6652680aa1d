// Autostarter: auto definitions on parent registration.
#include "umdev/daemon/autostart.h"

#include <spdlog/spdlog.h>

#include "umdev/control/start.h"

namespace umdev::daemon {

size_t Autostarter::StartParent(const std::string& parent) {
  size_t started = 0;
  for (const control::StoredDefinition& stored : store_.List(parent)) {
    if (!stored.definition.autostart) continue;
    const std::string uuid = stored.uuid.ToString();
    if (registry_.FindMdev(stored.uuid).has_value()) {
      spdlog::info("autostart: {} is already running", uuid);
      continue;
    }
    std::optional<control::AttributeFailure> failure;
    auto result = control::StartMdev(registry_, parent, stored.definition.mdev_type, stored.uuid,
                                     stored.definition.attrs, &failure);
    if (!result.has_value()) {
      spdlog::warn("autostart: {} on {} (type {}) failed: {}", uuid, parent,
                   stored.definition.mdev_type, result.error().Describe());
      continue;
    }
    spdlog::info("autostart: started {} on {} (type {})", uuid, parent,
                 stored.definition.mdev_type);
    ++started;
  }
  return started;
}

}  // namespace umdev::daemon
