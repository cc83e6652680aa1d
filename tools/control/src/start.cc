// StartMdev: create, then attributes in order, undone on failure.
#include "umdev/control/start.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace umdev::control {

Result<void> StartMdev(Registry& registry, const std::string& parent, const std::string& type,
                       const Uuid& uuid, const AttributeList& attrs,
                       std::optional<AttributeFailure>* failure) {
  UMDEV_TRY(registry.CreateMdev(parent, type, uuid));
  if (attrs.empty()) return {};
  auto known = registry.MdevAttributes(uuid);
  Result<void> outcome;
  for (const auto& [name, value] : attrs) {
    const bool exists =
        known.has_value() && std::any_of(known->begin(), known->end(), [&](const DeviceAttribute& a) {
          return a.name == name;
        });
    if (!exists) {
      outcome = Fail(ENOENT, fmt::format("Invalid attribute '{}'", name));
    } else {
      outcome = registry.WriteMdevAttribute(uuid, name, value);
    }
    if (!outcome.has_value()) {
      if (failure != nullptr) *failure = AttributeFailure{name, value, exists};
      break;
    }
  }
  if (outcome.has_value()) return {};
  if (auto removed = registry.RemoveMdev(uuid); !removed.has_value()) {
    spdlog::warn("start {}: removing it after a failed attribute: {}", uuid.ToString(),
                 removed.error().Describe());
  }
  return outcome;
}

}  // namespace umdev::control
