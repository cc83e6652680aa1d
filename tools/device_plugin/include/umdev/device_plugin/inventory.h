// The plugin's view of umdevd: which parents exist, which instances run
// and which are defined; from it, each resource's devices and their health,
// and what to ask umdevd for so that each resource has its instances.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/device_plugin/config.h"

namespace umdev::device_plugin {

struct RunningInstance {
  std::string parent;
  std::string type;
  bool broken = false;
};

struct DefinedInstance {
  std::string uuid;
  std::string parent;
  std::string type;
};

struct DaemonView {
  std::set<std::string> parents;                    // Registered parents.
  std::map<std::string, RunningInstance> running;   // By UUID.
  std::vector<DefinedInstance> defined;
};

// Reads the replies to "types", "list" and "defined". Errors: EPROTO
// naming the field that is missing or of the wrong kind.
Result<DaemonView> ParseDaemonView(const nlohmann::json& types, const nlohmann::json& list,
                                   const nlohmann::json& defined);

struct DeviceState {
  std::string id;      // The instance's UUID.
  std::string parent;
  bool healthy = false;
  std::string reason;  // Why not healthy; empty when healthy.
  bool operator==(const DeviceState&) const = default;
};

// A resource's devices: its type's definitions on its parents, ordered by
// UUID. Healthy = running, not broken, parent registered.
std::vector<DeviceState> DevicesOf(const ResourceSpec& resource, const DaemonView& view);

struct InstanceAction {
  enum class Kind { kDefine, kStart };
  Kind kind;
  std::string parent;
  std::string type;
  std::string uuid;
  bool operator==(const InstanceAction&) const = default;
};

// What brings |resource| to its configured instances: a definition (started
// automatically by umdevd from then on) for each missing one, UUIDs from
// |new_uuid|, and a start for each defined instance not running, on parents
// that are registered. Extra definitions are kept, not removed.
std::vector<InstanceAction> PlanInstances(const ResourceSpec& resource, const DaemonView& view,
                                          const std::function<std::string()>& new_uuid);

}  // namespace umdev::device_plugin
