// What umdev-device-plugin advertises: resources (umdev.io/NAME), each a
// type of mdev on one or more parents with a number of instances per
// parent, and where things live on the node. docs/kubernetes.md.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"

namespace umdev::device_plugin {

inline constexpr std::string_view kResourceDomain = "umdev.io";
inline constexpr std::string_view kApiVersion = "v1beta1";
inline constexpr std::string_view kDefaultPluginDir = "/var/lib/kubelet/device-plugins";
// Bounds on what a configuration may ask for: instances are real daemon
// objects, and every one is listed in each ListAndWatch message.
inline constexpr unsigned kMaxInstancesPerParent = 1024;
inline constexpr unsigned kMaxDevicesPerResource = 4096;
inline constexpr size_t kMaxResources = 64;

struct ParentPool {
  std::string parent;
  unsigned count = 0;  // Instances to keep defined on |parent|.
};

struct ResourceSpec {
  std::string name;  // NAME in umdev.io/NAME.
  std::string type;  // The mdev type id, as `umdevctl types` prints it.
  std::vector<ParentPool> parents;
  std::string FullName() const { return std::string(kResourceDomain) + "/" + name; }
};

struct PluginConfig {
  std::vector<ResourceSpec> resources;
  std::string state_dir = "/run/umdev";  // umdevd's --state-dir.
  std::string socket_dir;                // Default: STATE_DIR/vfio-user.
  std::string plugin_dir = std::string(kDefaultPluginDir);
  std::string container_dir = "/run/umdev/vfio-user";
  std::string cdi_output = "/var/run/cdi/umdev.io-device.json";  // Empty: none.
  std::chrono::milliseconds poll_interval{1000};
  std::string HostSocketDir() const { return socket_dir.empty() ? state_dir + "/vfio-user" : socket_dir; }
};

// NAME must be what Kubernetes takes after "umdev.io/": a qualified name's
// name part (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends).
bool IsResourceName(std::string_view name);

// "PARENT.TYPE=COUNT": COUNT instances of TYPE on PARENT, as the resource
// umdev.io/PARENT.TYPE. PARENT has no '.'. Errors: EINVAL.
Result<ResourceSpec> ParseResourceFlag(std::string_view text);

// A configuration file's "resources": [{"name"?, "type", "parents":
// {PARENT: COUNT, ...}}]. Without "name", a single-parent resource is named
// PARENT.TYPE and a multi-parent one TYPE. Errors: EINVAL naming the entry.
Result<std::vector<ResourceSpec>> ParseResources(const nlohmann::json& resources);

// Names valid and unique, each (parent, type) in one resource only, counts
// within the bounds above. Errors: EINVAL naming the first violation.
Result<void> ValidateResources(const std::vector<ResourceSpec>& resources);

}  // namespace umdev::device_plugin
