// Layout: the directories of the sysfs tree, computed from one look at the
// registry. Private to the sysfs module.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/sysfs/tree.h"

namespace umdev::sysfs {

// One node as its directory lists it. Files carry their callbacks, which
// reach the registry (and the vendor) only when read or written.
struct Entry {
  NodeKind kind = NodeKind::kDirectory;
  mode_t mode = 0755;
  std::string target;                                    // Symlinks.
  std::function<Result<std::string>()> read;             // Null: not readable.
  std::function<Result<void>(std::string_view)> write;  // Null: not writable.
};

using Children = std::map<std::string, Entry, std::less<>>;

// Where instances live, relative to the tree root.
inline constexpr std::string_view kParentsDir = "devices/virtual/umdev";
// Where bus drivers' PCI functions live (the kernel's devices/pci<root>).
inline constexpr std::string_view kPciRoot = "pci0000:00";

// Built per Tree call on the caller's thread; not shared.
class Layout {
 public:
  Layout(Registry& registry, const TreeOptions& options);

  // The entries of the directory at |path|, a canonical path whose every
  // component its parent directory lists. Errors: ENOENT the registry
  // changed between the two looks.
  Result<Children> ChildrenOf(const std::vector<std::string>& path) const;

 private:
  const ParentStatus* FindParent(std::string_view name) const;
  const MdevStatus* FindMdev(std::string_view parent, std::string_view uuid) const;
  Children TopLevel(const std::vector<std::string>& path) const;
  Result<Children> Bus(const std::vector<std::string>& path) const;
  Result<Children> Kernel(const std::vector<std::string>& path) const;
  Result<Children> Devices(const std::vector<std::string>& path) const;
  Result<Children> TypeDir(const ParentStatus& parent, const std::vector<std::string>& rest) const;
  Result<Children> DeviceDir(const MdevStatus& mdev, const std::vector<std::string>& rest) const;
  // bus/pci/... and devices/pci0000:00/...: the functions bus drivers
  // registered (passthrough), the kernel's way.
  Result<Children> PciBus(const std::vector<std::string>& path) const;
  Result<Children> PciDevices(const std::vector<std::string>& path) const;
  std::string DriverOf(std::string_view parent) const;

  Registry& registry_;
  const TreeOptions& options_;
  const std::vector<ParentStatus> parents_;
  const std::vector<MdevStatus> mdevs_;
  const std::vector<BusDeviceStatus> bus_devices_;
};

}  // namespace umdev::sysfs
