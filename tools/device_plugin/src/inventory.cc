#include "umdev/device_plugin/inventory.h"

#include <fmt/format.h>

#include <algorithm>

namespace umdev::device_plugin {

namespace {

using Json = nlohmann::json;

Result<const Json*> ListField(const Json& reply, const char* field, const char* command) {
  const auto it = reply.is_object() ? reply.find(field) : reply.end();
  if (!reply.is_object() || it == reply.end() || !it->is_array()) {
    return Fail(EPROTO, fmt::format("umdevd's '{}' reply has no list \"{}\"", command, field));
  }
  return &*it;
}

Result<std::string> Text(const Json& entry, const char* field, const char* command) {
  const auto it = entry.is_object() ? entry.find(field) : entry.end();
  if (!entry.is_object() || it == entry.end() || !it->is_string()) {
    return Fail(EPROTO, fmt::format("an entry of umdevd's '{}' reply has no string \"{}\"", command, field));
  }
  return it->get<std::string>();
}

bool ServesType(const ResourceSpec& resource, const std::string& parent, const std::string& type) {
  if (type != resource.type) return false;
  return std::any_of(resource.parents.begin(), resource.parents.end(),
                     [&](const ParentPool& pool) { return pool.parent == parent; });
}

}  // namespace

Result<DaemonView> ParseDaemonView(const Json& types, const Json& list, const Json& defined) {
  DaemonView view;
  UMDEV_ASSIGN_OR_RETURN(const Json* parents, ListField(types, "parents", "types"));
  for (const Json& parent : *parents) {
    UMDEV_ASSIGN_OR_RETURN(std::string name, Text(parent, "name", "types"));
    view.parents.insert(std::move(name));
  }
  UMDEV_ASSIGN_OR_RETURN(const Json* mdevs, ListField(list, "mdevs", "list"));
  for (const Json& mdev : *mdevs) {
    UMDEV_ASSIGN_OR_RETURN(std::string uuid, Text(mdev, "uuid", "list"));
    UMDEV_ASSIGN_OR_RETURN(std::string parent, Text(mdev, "parent", "list"));
    UMDEV_ASSIGN_OR_RETURN(std::string type, Text(mdev, "type", "list"));
    const auto broken = mdev.find("broken");
    view.running[std::move(uuid)] = {std::move(parent), std::move(type),
                                     broken != mdev.end() && broken->is_boolean() && broken->get<bool>()};
  }
  UMDEV_ASSIGN_OR_RETURN(const Json* definitions, ListField(defined, "definitions", "defined"));
  for (const Json& d : *definitions) {
    UMDEV_ASSIGN_OR_RETURN(std::string uuid, Text(d, "uuid", "defined"));
    UMDEV_ASSIGN_OR_RETURN(std::string parent, Text(d, "parent", "defined"));
    UMDEV_ASSIGN_OR_RETURN(std::string type, Text(d, "mdev_type", "defined"));
    view.defined.push_back({std::move(uuid), std::move(parent), std::move(type)});
  }
  return view;
}

std::vector<DeviceState> DevicesOf(const ResourceSpec& resource, const DaemonView& view) {
  std::vector<DeviceState> devices;
  for (const DefinedInstance& d : view.defined) {
    if (!ServesType(resource, d.parent, d.type)) continue;
    DeviceState state{.id = d.uuid, .parent = d.parent, .healthy = false, .reason = ""};
    const auto running = view.running.find(d.uuid);
    if (!view.parents.contains(d.parent)) {
      state.reason = "parent " + d.parent + " is not registered";
    } else if (running == view.running.end()) {
      state.reason = "not running";
    } else if (running->second.parent != d.parent || running->second.type != d.type) {
      state.reason = "running as " + running->second.type + " on " + running->second.parent;
    } else if (running->second.broken) {
      state.reason = "broken: its pins were revoked";
    } else {
      state.healthy = true;
    }
    devices.push_back(std::move(state));
  }
  std::sort(devices.begin(), devices.end(),
            [](const DeviceState& a, const DeviceState& b) { return a.id < b.id; });
  devices.erase(std::unique(devices.begin(), devices.end(),
                            [](const DeviceState& a, const DeviceState& b) { return a.id == b.id; }),
                devices.end());
  if (devices.size() > kMaxDevicesPerResource) devices.resize(kMaxDevicesPerResource);
  return devices;
}

std::vector<InstanceAction> PlanInstances(const ResourceSpec& resource, const DaemonView& view,
                                          const std::function<std::string()>& new_uuid) {
  std::vector<InstanceAction> actions;
  for (const ParentPool& pool : resource.parents) {
    if (!view.parents.contains(pool.parent)) continue;  // Planned again once it registers.
    unsigned defined = 0;
    for (const DefinedInstance& d : view.defined) {
      if (d.parent != pool.parent || d.type != resource.type) continue;
      ++defined;
      if (!view.running.contains(d.uuid)) {
        actions.push_back({InstanceAction::Kind::kStart, d.parent, d.type, d.uuid});
      }
    }
    for (; defined < pool.count; ++defined) {
      actions.push_back({InstanceAction::Kind::kDefine, pool.parent, resource.type, new_uuid()});
    }
  }
  return actions;
}

}  // namespace umdev::device_plugin
