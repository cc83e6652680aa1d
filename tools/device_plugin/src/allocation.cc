#include "umdev/device_plugin/allocation.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <unordered_map>

#include "umdev/cli/cdi.h"

namespace umdev::device_plugin {

namespace {

std::unordered_map<std::string, const DeviceState*> ById(const std::vector<DeviceState>& devices) {
  std::unordered_map<std::string, const DeviceState*> by_id;
  for (const DeviceState& d : devices) by_id.emplace(d.id, &d);
  return by_id;
}

}  // namespace

std::string ResourceVariable(const ResourceSpec& resource) {
  std::string name = "UMDEV_SOCKETS_";
  for (char c : resource.name) {
    name += std::isalnum(static_cast<unsigned char>(c)) != 0
                ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
                : '_';
  }
  return name;
}

Result<ContainerAllocation> AllocateContainer(const ResourceSpec& resource,
                                              const std::vector<DeviceState>& devices,
                                              const std::vector<std::string>& ids,
                                              const SocketLayout& layout) {
  if (ids.empty() || ids.size() > kMaxDevicesPerRequest) {
    return Fail(EINVAL, fmt::format("{} devices asked of {} (1 to {})", ids.size(), resource.FullName(),
                                    kMaxDevicesPerRequest));
  }
  const auto by_id = ById(devices);
  std::set<std::string_view> seen;
  ContainerAllocation allocation;
  std::string sockets;
  for (const std::string& id : ids) {
    const auto it = by_id.find(id);
    if (it == by_id.end()) {
      // Only the ID's length goes into the message: kubelet echoes it.
      return Fail(EINVAL, fmt::format("no device '{}' in {}", id.substr(0, 64), resource.FullName()));
    }
    if (!seen.insert(id).second) return Fail(EINVAL, fmt::format("device {} asked for twice", id));
    if (!it->second->healthy) {
      return Fail(ENODEV, fmt::format("device {} is unhealthy: {}", id, it->second->reason));
    }
    const std::string container_path = layout.container_dir + "/" + id + ".sock";
    allocation.mounts.push_back({container_path, layout.host_dir + "/" + id + ".sock"});
    allocation.envs[cli::CdiSocketVariable(id)] = container_path;
    allocation.cdi_devices.push_back(std::string(cli::kCdiKind) + "=" + id);
    sockets += (sockets.empty() ? "" : ",") + container_path;
  }
  allocation.envs["UMDEV_SOCKETS"] = sockets;
  allocation.envs[ResourceVariable(resource)] = sockets;
  return allocation;
}

Result<std::vector<std::string>> PreferredAllocation(const std::vector<DeviceState>& devices,
                                                     const std::vector<std::string>& available,
                                                     const std::vector<std::string>& must_include,
                                                     int size) {
  if (size < 0 || static_cast<size_t>(size) > available.size() ||
      static_cast<size_t>(size) < must_include.size()) {
    return Fail(EINVAL, fmt::format("allocation size {} with {} available and {} required", size,
                                    available.size(), must_include.size()));
  }
  const auto by_id = ById(devices);
  std::set<std::string> free;
  for (const std::string& id : available) {
    if (!by_id.contains(id)) return Fail(EINVAL, fmt::format("no device '{}'", id.substr(0, 64)));
    if (!free.insert(id).second) return Fail(EINVAL, fmt::format("device {} available twice", id));
  }
  std::vector<std::string> chosen;
  std::map<std::string, size_t> used_parents;  // Parent -> devices |must_include| has there.
  for (const std::string& id : must_include) {
    if (free.erase(id) == 0) return Fail(EINVAL, fmt::format("required device '{}' is not available", id.substr(0, 64)));
    chosen.push_back(id);
    ++used_parents[by_id.at(id)->parent];
  }
  std::map<std::string, std::vector<std::string>> pools;  // Parent -> free devices, by UUID.
  for (const std::string& id : free) pools[by_id.at(id)->parent].push_back(id);

  const size_t wanted = static_cast<size_t>(size) - chosen.size();
  std::vector<std::string> order;
  for (const auto& [parent, ids] : pools) order.push_back(parent);
  // Rank: parents already in use (most used first); then a parent that fits
  // the rest whole, smallest first; then the largest pools.
  auto rank = [&](const std::string& parent) {
    const auto used = used_parents.find(parent);
    const size_t pool = pools.at(parent).size();
    if (used != used_parents.end()) return std::tuple<int, size_t, size_t>(0, SIZE_MAX - used->second, 0);
    if (pool >= wanted) return std::tuple<int, size_t, size_t>(1, pool, 0);
    return std::tuple<int, size_t, size_t>(2, SIZE_MAX - pool, 0);
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](const std::string& a, const std::string& b) { return rank(a) < rank(b); });
  for (const std::string& parent : order) {
    for (const std::string& id : pools.at(parent)) {
      if (chosen.size() == static_cast<size_t>(size)) break;
      chosen.push_back(id);
    }
  }
  return chosen;
}

}  // namespace umdev::device_plugin
