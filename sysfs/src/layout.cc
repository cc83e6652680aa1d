// Layout: which entries each directory of the tree has, and what their
// attributes do (kernel mdev_sysfs.c and drivers/base/core.c).
#include "layout.h"

#include <fmt/format.h>

#include <array>
#include <set>

namespace umdev::sysfs {
namespace {

constexpr mode_t kDirMode = 0755;
constexpr mode_t kLinkMode = 0777;

Entry Dir() { return Entry{.kind = NodeKind::kDirectory, .mode = kDirMode}; }

Entry Link(std::string target) {
  return Entry{.kind = NodeKind::kSymlink, .mode = kLinkMode, .target = std::move(target)};
}

// A read-only attribute whose value is fixed when the directory is listed,
// which is when a read() asks for it: reads are live.
Entry Value(std::string value) {
  return Entry{.kind = NodeKind::kFile,
               .mode = 0444,
               .read = [value = std::move(value)]() -> Result<std::string> { return value; }};
}

Entry WriteOnly(std::function<Result<void>(std::string_view)> write) {
  return Entry{.kind = NodeKind::kFile, .mode = 0200, .write = std::move(write)};
}

// Like sysfs show() methods, every value ends in one newline.
std::string Line(std::string value) {
  if (value.empty() || value.back() != '\n') value.push_back('\n');
  return value;
}

std::string DeviceDirOf(const MdevStatus& mdev) {
  return fmt::format("{}/{}/{}", kParentsDir, mdev.parent, mdev.uuid.ToString());
}

// kobject_synth_uevent(): an action word, optionally followed by a space and
// arguments. umdev has no udev to tell, so a valid write changes nothing.
Result<void> WriteUevent(std::string_view data) {
  if (!data.empty() && data.back() == '\n') data.remove_suffix(1);
  const std::string_view action = data.substr(0, data.find(' '));
  static constexpr std::array<std::string_view, 8> kActions = {
      "add", "remove", "change", "move", "online", "offline", "bind", "unbind"};
  for (std::string_view known : kActions) {
    if (action == known) return {};
  }
  return Fail(EINVAL, fmt::format("uevent: unknown action '{}'", action));
}

}  // namespace

Layout::Layout(Registry& registry, const TreeOptions& options)
    : registry_(registry),
      options_(options),
      parents_(registry.Parents()),
      mdevs_(registry.Mdevs()),
      bus_devices_(registry.BusDevices()) {}

const ParentStatus* Layout::FindParent(std::string_view name) const {
  for (const ParentStatus& parent : parents_) {
    if (parent.name == name) return &parent;
  }
  return nullptr;
}

const MdevStatus* Layout::FindMdev(std::string_view parent, std::string_view uuid) const {
  for (const MdevStatus& mdev : mdevs_) {
    if (mdev.parent == parent && mdev.uuid.ToString() == uuid) return &mdev;
  }
  return nullptr;
}

std::string Layout::DriverOf(std::string_view parent) const {
  const ParentStatus* found = FindParent(parent);
  return found != nullptr ? found->driver : std::string();
}

Result<Children> Layout::ChildrenOf(const std::vector<std::string>& path) const {
  if (path.empty()) return TopLevel(path);
  if (path[0] == "devices" && path.size() >= 2 && path[1] == kPciRoot) return PciDevices(path);
  if (path[0] == "class" || (path[0] == "devices" && path.size() <= 2)) return TopLevel(path);
  if (path[0] == "bus" && path.size() >= 2 && path[1] == "pci") return PciBus(path);
  if (path[0] == "bus") return Bus(path);
  if (path[0] == "kernel") return Kernel(path);
  if (path[0] == "devices") return Devices(path);
  return Fail(ENOENT, "no directory " + path[0]);
}

Children Layout::TopLevel(const std::vector<std::string>& path) const {
  Children children;
  if (path.empty()) {
    for (const char* name : {"bus", "class", "devices", "kernel"}) children.emplace(name, Dir());
  } else if (path[0] == "class" && path.size() == 1) {
    children.emplace("mdev_bus", Dir());
  } else if (path[0] == "class") {  // class/mdev_bus: the compat class links.
    for (const ParentStatus& parent : parents_) {
      children.emplace(parent.name, Link(fmt::format("../../{}/{}", kParentsDir, parent.name)));
    }
  } else if (path.size() == 1) {
    children.emplace("virtual", Dir());
    if (!bus_devices_.empty()) children.emplace(kPciRoot, Dir());
  } else {
    children.emplace("umdev", Dir());
  }
  return children;
}

Result<Children> Layout::Bus(const std::vector<std::string>& path) const {
  Children children;
  if (path.size() == 1) {
    children.emplace("mdev", Dir());
    if (!bus_devices_.empty()) children.emplace("pci", Dir());
  } else if (path.size() == 2) {
    children.emplace("devices", Dir());
    children.emplace("drivers", Dir());
  } else if (path.size() == 3 && path[2] == "devices") {
    for (const MdevStatus& mdev : mdevs_) {
      children.emplace(mdev.uuid.ToString(), Link("../../../" + DeviceDirOf(mdev)));
    }
  } else if (path.size() == 3) {  // drivers: one per vendor driver with a parent.
    for (const ParentStatus& parent : parents_) children.emplace(parent.driver, Dir());
  } else {  // drivers/<driver>: the instances it is bound to.
    for (const MdevStatus& mdev : mdevs_) {
      if (DriverOf(mdev.parent) == path[3]) {
        children.emplace(mdev.uuid.ToString(), Link("../../../../" + DeviceDirOf(mdev)));
      }
    }
  }
  return children;
}

Result<Children> Layout::Kernel(const std::vector<std::string>& path) const {
  Children children;
  if (path.size() == 1) {
    children.emplace("iommu_groups", Dir());
  } else if (path.size() == 2) {
    for (const MdevStatus& mdev : mdevs_) children.emplace(std::to_string(mdev.iommu_group), Dir());
    for (const BusDeviceStatus& device : bus_devices_) {
      children.emplace(std::to_string(device.iommu_group), Dir());
    }
  } else if (path.size() == 3) {
    children.emplace("devices", Dir());
  } else {
    for (const MdevStatus& mdev : mdevs_) {
      if (std::to_string(mdev.iommu_group) == path[2]) {
        children.emplace(mdev.uuid.ToString(), Link("../../../../" + DeviceDirOf(mdev)));
      }
    }
    for (const BusDeviceStatus& device : bus_devices_) {
      if (std::to_string(device.iommu_group) == path[2]) {
        children.emplace(device.name,
                         Link(fmt::format("../../../../devices/{}/{}", kPciRoot, device.name)));
      }
    }
  }
  return children;
}

// devices/virtual/umdev/...: the parent devices and their instances.
Result<Children> Layout::Devices(const std::vector<std::string>& path) const {
  Children children;
  if (path.size() == 3) {
    for (const ParentStatus& parent : parents_) children.emplace(parent.name, Dir());
    return children;
  }
  const ParentStatus* parent = FindParent(path[3]);
  if (parent == nullptr) return Fail(ENOENT, "no parent " + path[3]);
  if (path.size() == 4) {
    children.emplace("mdev_supported_types", Dir());
    // The parent driver's own attributes, read live; the core's names win.
    for (const std::string& name : parent->attributes) {
      if (name.find('/') != std::string::npos) continue;
      Registry& registry = registry_;
      children.emplace(name, Entry{.kind = NodeKind::kFile,
                                   .mode = 0444,
                                   .read = [&registry, parent = parent->name,
                                            name]() -> Result<std::string> {
                                     UMDEV_ASSIGN_OR_RETURN(
                                         std::string value,
                                         registry.ReadParentAttribute(parent, name));
                                     return Line(std::move(value));
                                   }});
    }
    for (const MdevStatus& mdev : mdevs_) {
      if (mdev.parent == parent->name) children.emplace(mdev.uuid.ToString(), Dir());
    }
    return children;
  }
  const std::vector<std::string> rest(path.begin() + 5, path.end());
  if (path[4] == "mdev_supported_types") return TypeDir(*parent, rest);
  const MdevStatus* mdev = FindMdev(parent->name, path[4]);
  if (mdev == nullptr) return Fail(ENOENT, "no mdev " + path[4]);
  return DeviceDir(*mdev, rest);
}

// bus/pci/{devices,drivers/vfio-pci}: links to the functions.
Result<Children> Layout::PciBus(const std::vector<std::string>& path) const {
  Children children;
  if (path.size() == 2) {
    children.emplace("devices", Dir());
    children.emplace("drivers", Dir());
  } else if (path.size() == 3 && path[2] == "devices") {
    for (const BusDeviceStatus& device : bus_devices_) {
      children.emplace(device.name,
                       Link(fmt::format("../../../devices/{}/{}", kPciRoot, device.name)));
    }
  } else if (path.size() == 3 && path[2] == "drivers") {
    children.emplace("vfio-pci", Dir());
  } else if (path.size() == 4 && path[2] == "drivers" && path[3] == "vfio-pci") {
    for (const BusDeviceStatus& device : bus_devices_) {
      children.emplace(device.name,
                       Link(fmt::format("../../../../devices/{}/{}", kPciRoot, device.name)));
    }
  } else {
    return Fail(ENOENT, "no directory bus/pci/" + path.back());
  }
  return children;
}

// devices/pci0000:00/<address>/: what vfio-pci's device directory has that
// a VFIO user reads (the group link, the vfio-dev node), and the socket.
Result<Children> Layout::PciDevices(const std::vector<std::string>& path) const {
  Children children;
  if (path.size() == 2) {
    for (const BusDeviceStatus& device : bus_devices_) children.emplace(device.name, Dir());
    return children;
  }
  const BusDeviceStatus* device = nullptr;
  size_t index = 0;
  for (size_t i = 0; i < bus_devices_.size(); ++i) {
    if (bus_devices_[i].name == path[2]) {
      device = &bus_devices_[i];
      index = i;
    }
  }
  if (device == nullptr) return Fail(ENOENT, "no device " + path[2]);
  if (path.size() == 3) {
    children.emplace("iommu_group",
                     Link(fmt::format("../../../kernel/iommu_groups/{}", device->iommu_group)));
    children.emplace("driver", Link("../../../bus/pci/drivers/vfio-pci"));
    children.emplace("subsystem", Link("../../../bus/pci"));
    children.emplace("vfio-dev", Dir());
    children.emplace("umdev_driver", Value(Line(device->driver)));
    if (options_.socket_path) {
      children.emplace("vfio_user_socket", Value(Line(options_.socket_path(device->name))));
    }
  } else if (path.size() == 4 && path[3] == "vfio-dev") {
    // The kernel numbers its vfio device nodes; here, in listing order.
    // Empty: umdev has no character device for it (vfio_user_socket is
    // how a client reaches it).
    children.emplace(fmt::format("vfio{}", index), Dir());
  } else if (path.size() == 5 && path[3] == "vfio-dev") {
  } else {
    return Fail(ENOENT, "no directory " + path.back());
  }
  return children;
}

// <parent>/mdev_supported_types/<type>/...; |rest| follows mdev_supported_types.
Result<Children> Layout::TypeDir(const ParentStatus& parent,
                                 const std::vector<std::string>& rest) const {
  Children children;
  if (rest.empty()) {
    for (const MdevTypeStatus& type : parent.types) children.emplace(type.id, Dir());
    return children;
  }
  const MdevTypeStatus* type = nullptr;
  for (const MdevTypeStatus& candidate : parent.types) {
    if (candidate.id == rest[0]) type = &candidate;
  }
  if (type == nullptr) return Fail(ENOENT, "no type " + rest[0]);
  if (rest.size() > 1) {  // devices/
    for (const Uuid& uuid : type->devices) {
      children.emplace(uuid.ToString(), Link("../../../" + uuid.ToString()));
    }
    return children;
  }
  Registry& registry = registry_;
  children.emplace("create", WriteOnly([&registry, parent = parent.name, id = type->id](
                                           std::string_view data) -> Result<void> {
                     UMDEV_ASSIGN_OR_RETURN(const Uuid uuid, ParseCreateWrite(data));
                     return registry.CreateMdev(parent, id, uuid);
                   }));
  children.emplace("name", Value(Line(type->name)));
  // The kernel creates "description" only for drivers with show_description.
  if (!type->description.empty()) children.emplace("description", Value(Line(type->description)));
  children.emplace("available_instances", Value(fmt::format("{}\n", type->available_instances)));
  children.emplace("device_api", Value(Line(type->device_api)));
  children.emplace("devices", Dir());
  return children;
}

// <parent>/<uuid>/...; |rest| names a vendor attribute subdirectory, if any.
Result<Children> Layout::DeviceDir(const MdevStatus& mdev,
                                   const std::vector<std::string>& rest) const {
  Children children;
  Registry& registry = registry_;
  const Uuid uuid = mdev.uuid;
  const std::string driver = DriverOf(mdev.parent);
  if (rest.empty()) {
    children.emplace("remove", WriteOnly([&registry, uuid](std::string_view data) -> Result<void> {
                       UMDEV_ASSIGN_OR_RETURN(const unsigned long value, ParseRemoveWrite(data));
                       if (value == 0) return {};  // remove_store(): 0 is a no-op.
                       return registry.RemoveMdev(uuid);
                     }));
    children.emplace("mdev_type", Link("../mdev_supported_types/" + mdev.type_id));
    children.emplace("driver", Link("../../../../../bus/mdev/drivers/" + driver));
    children.emplace("subsystem", Link("../../../../../bus/mdev"));
    children.emplace("iommu_group",
                     Link(fmt::format("../../../../../kernel/iommu_groups/{}", mdev.iommu_group)));
    Entry uevent = Value(fmt::format("DRIVER={}\n", driver));
    uevent.mode = 0644;
    uevent.write = WriteUevent;
    children.emplace("uevent", std::move(uevent));
    if (options_.socket_path) {
      children.emplace("vfio_user_socket", Value(Line(options_.socket_path(uuid.ToString()))));
    }
  }
  // Vendor attributes (kernel: the driver's dev_groups). A device going away
  // has none; a name the core already uses stays the core's.
  auto attributes = registry_.MdevAttributes(uuid);
  if (!attributes.has_value()) return children;
  std::string prefix;
  for (const std::string& part : rest) prefix += part + "/";
  for (const DeviceAttribute& attribute : *attributes) {
    if (!attribute.name.starts_with(prefix)) continue;
    const std::string_view relative = std::string_view(attribute.name).substr(prefix.size());
    const size_t slash = relative.find('/');
    const std::string name(relative.substr(0, slash));
    if (name.empty() || name == "." || name == ".." || children.contains(name)) continue;
    if (slash != std::string_view::npos) {
      children.emplace(name, Dir());
      continue;
    }
    Entry entry{.kind = NodeKind::kFile, .mode = 0};
    if (attribute.readable) {
      entry.mode |= 0444;
      entry.read = [&registry, uuid, full = attribute.name]() -> Result<std::string> {
        UMDEV_ASSIGN_OR_RETURN(std::string value, registry.ReadMdevAttribute(uuid, full));
        return Line(std::move(value));
      };
    }
    if (attribute.writable) {
      entry.mode |= 0200;
      entry.write = [&registry, uuid, full = attribute.name](std::string_view data) {
        return registry.WriteMdevAttribute(uuid, full, data);
      };
    }
    children.emplace(name, std::move(entry));
  }
  return children;
}

}  // namespace umdev::sysfs
