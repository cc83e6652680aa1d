// CDI (the Container Device Interface): a spec that lets container engines
// (podman, containerd, a device plugin's Allocate) hand umdev devices to a
// workload by name, umdev.io/device=UUID. A vfio-user device is a socket,
// so each device's edit is a bind mount of its socket plus an environment
// variable naming it. docs/cdi.md.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/cli/commands.h"

namespace umdev::cli {

inline constexpr std::string_view kCdiVersion = "0.6.0";
inline constexpr std::string_view kCdiKind = "umdev.io/device";
inline constexpr std::string_view kCdiDefaultOutput = "/etc/cdi/umdev.io-device.json";

struct CdiDevice {
  std::string uuid;
  std::string parent;
  std::string type;
};

struct CdiLayout {
  std::string host_socket_dir;       // Where the sockets are on the host.
  std::string container_socket_dir;  // Where they appear in the container.
};

// The spec for |devices|: one CDI device per instance (named by its UUID)
// and, per parent and type, one named PARENT.TYPE that carries every
// instance of that type. A parent or type whose name CDI cannot carry gets
// no such device (|skipped| says which). Devices are ordered by name.
nlohmann::json CdiSpec(const std::vector<CdiDevice>& devices, const CdiLayout& layout,
                       std::vector<std::string>* skipped = nullptr);

// The CDI specification's rules for what CdiSpec writes: version, kind and
// device-name syntax, unique names, non-empty edits, env as KEY=VALUE,
// absolute mount paths. Errors: EINVAL naming the first violation.
Result<void> ValidateCdiSpec(const nlohmann::json& spec);
bool IsCdiDeviceName(std::string_view name);
// UMDEV_SOCKET_<UUID in capitals, '-' as '_'>: the variable naming one
// device's socket in a container.
std::string CdiSocketVariable(std::string_view uuid);
// Writes |text| to |path| (0644, parent folders created) through a
// temporary file and rename, so that a reader (a container engine) never
// sees half a spec. Errors: the failing call's errno.
Result<void> WriteFileAtomically(const std::string& path, const std::string& text);

struct CdiOptions {
  std::string state_dir;
  std::string output = std::string(kCdiDefaultOutput);  // "-": stdout.
  std::optional<std::string> socket_dir;               // As in QemuArgsOptions.
  std::string container_dir = "/run/umdev/vfio-user";
};

// umdevctl cdi generate: the spec for the running devices, written
// atomically (0644) to |output|.
Outcome CdiGenerate(const Transport& call, const CdiOptions& options);

}  // namespace umdev::cli
