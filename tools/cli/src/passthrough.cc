// umdevctl passthrough: sysfs writes as driverctl makes them, and the
// daemon's list of bus devices.
#include "umdev/cli/passthrough.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <set>

#include "command_support.h"

namespace umdev::cli {
namespace {

// Printed as every umdevctl error is (command_support.h).
Outcome Refuse(const std::string& message) { return detail::Report(detail::Failure{message, ""}); }

// One sysfs write; a driver's refusal (EINVAL, ENODEV) comes back as the
// stream's failure.
bool WriteSysfs(const std::string& path, const std::string& value) {
  std::ofstream file(path);
  file << value;
  file.flush();
  return static_cast<bool>(file);
}

// Served addresses, from the daemon. Errors: unreachable, or a reply
// without the list.
Result<std::set<std::string>> Served(const Transport& call) {
  UMDEV_ASSIGN_OR_RETURN(const nlohmann::json reply, call({{"cmd", "devices"}}));
  if (!reply.value("ok", false) || !reply.contains("devices") || !reply["devices"].is_array()) {
    return Fail(EIO, "umdevd did not list its devices: " + reply.dump());
  }
  std::set<std::string> served;
  for (const auto& device : reply["devices"]) served.insert(device.value("name", ""));
  return served;
}

}  // namespace

Outcome PassthroughBind(const pci::Sysfs& sysfs, const std::vector<std::string>& addresses) {
  std::vector<std::string> functions;
  for (const std::string& text : addresses) {
    auto address = pci::NormalizeAddress(text);
    if (!address.has_value()) return Refuse(address.error().context);
    if (!sysfs.Exists(*address)) return Refuse("no PCI device " + *address);
    functions.push_back(*address);
  }
  // Every other member of their groups must be on vfio-pci or on none.
  std::vector<std::string> blocking;
  for (const std::string& address : functions) {
    const auto group = sysfs.IommuGroupOf(address);
    if (!group) {
      return Refuse(fmt::format("{} has no IOMMU group: turn the host's IOMMU on "
                                 "(intel_iommu=on or amd_iommu=on)",
                                 address));
    }
    for (const std::string& member : sysfs.GroupMembers(*group)) {
      const std::string driver = sysfs.DriverOf(member);
      if (std::find(functions.begin(), functions.end(), member) == functions.end() &&
          !driver.empty() && driver != "vfio-pci" &&
          std::find(blocking.begin(), blocking.end(), member + " (" + driver + ")") ==
              blocking.end()) {
        blocking.push_back(member + " (" + driver + ")");
      }
    }
  }
  if (!blocking.empty()) {
    std::string names;
    for (const std::string& member : blocking) names += (names.empty() ? "" : ", ") + member;
    return Refuse(fmt::format("the IOMMU group would not be viable: {} still bound to a host "
                               "driver; bind them too (umdevctl passthrough bind ADDRESS...)",
                               names));
  }
  Outcome outcome;
  for (const std::string& address : functions) {
    const std::string device = sysfs.DevicePath(address);
    const std::string driver = sysfs.DriverOf(address);
    if (driver == "vfio-pci") {
      outcome.out += address + ": already on vfio-pci\n";
      continue;
    }
    if (!WriteSysfs(device + "/driver_override", "vfio-pci")) {
      return Refuse("cannot write " + device + "/driver_override");
    }
    if (!driver.empty() &&
        !WriteSysfs(fmt::format("{}/bus/pci/drivers/{}/unbind", sysfs.root(), driver), address)) {
      return Refuse(fmt::format("{}: {} would not let it go", address, driver));
    }
    (void)WriteSysfs(sysfs.root() + "/bus/pci/drivers_probe", address);
    if (sysfs.DriverOf(address) != "vfio-pci") {
      return Refuse(fmt::format("{}: vfio-pci did not take it (modprobe vfio-pci)", address));
    }
    outcome.out += fmt::format("{}: {} -> vfio-pci\n", address, driver.empty() ? "none" : driver);
  }
  return outcome;
}

Outcome PassthroughUnbind(const Transport& call, const pci::Sysfs& sysfs,
                          const std::vector<std::string>& addresses) {
  auto served = Served(call);
  if (!served.has_value()) return Refuse(served.error().Describe());
  Outcome outcome;
  for (const std::string& text : addresses) {
    auto address = pci::NormalizeAddress(text);
    if (!address.has_value()) return Refuse(address.error().context);
    if (served->contains(*address)) {
      return Refuse(fmt::format("umdevd serves {}: take it out of umdevd's configuration first",
                                 *address));
    }
    if (sysfs.DriverOf(*address) != "vfio-pci") {
      return Refuse(*address + " is not bound to vfio-pci");
    }
    const std::string device = sysfs.DevicePath(*address);
    // An empty override lets the device's own driver match again.
    if (!WriteSysfs(device + "/driver_override", "\n") ||
        !WriteSysfs(sysfs.root() + "/bus/pci/drivers/vfio-pci/unbind", *address)) {
      return Refuse("cannot release " + *address + " from vfio-pci");
    }
    (void)WriteSysfs(sysfs.root() + "/bus/pci/drivers_probe", *address);
    const std::string now = sysfs.DriverOf(*address);
    outcome.out += fmt::format("{}: vfio-pci -> {}\n", *address, now.empty() ? "none" : now);
  }
  return outcome;
}

Outcome PassthroughList(const Transport& call, const pci::Sysfs& sysfs, bool json) {
  auto reply = call({{"cmd", "devices"}});
  if (!reply.has_value()) return Refuse(reply.error().Describe());
  if (!reply->value("ok", false) || !(*reply)["devices"].is_array()) {
    return Refuse("umdevd did not list its devices: " + reply->dump());
  }
  nlohmann::json list = nlohmann::json::array();
  std::string table;
  for (const auto& device : (*reply)["devices"]) {
    const std::string name = device.value("name", "");
    const std::string host_driver = sysfs.DriverOf(name);
    nlohmann::json entry = {{"address", name},
                            {"driver", device.value("driver", "")},
                            {"iommu_group", device.value("iommu_group", 0u)},
                            {"host_driver", host_driver},
                            {"open", device.value("open", false)}};
    // The client: its VM as list -v shows an mdev's, or the process of a
    // client that is not a VM (a test rig's umdev-probe).
    std::string client = detail::DescribeVm(device);
    if (client.empty() && device.contains("vm") && device["vm"].is_object() &&
        device["vm"].value("pid", 0) > 0) {
      client = fmt::format("pid {}", device["vm"].value("pid", 0));
    }
    if (device.contains("vm")) entry["vm"] = device["vm"];
    // A function umdevd could not reset since its last client.
    const std::string needs_reset =
        device.contains("needs_reset") && device["needs_reset"].is_string()
            ? device["needs_reset"].get<std::string>()
            : std::string();
    if (!needs_reset.empty()) entry["needs_reset"] = needs_reset;
    list.push_back(std::move(entry));
    table += fmt::format("{} group {} {} {}{}\n", name, device.value("iommu_group", 0u),
                         host_driver.empty() ? "(no driver)" : host_driver,
                         !device.value("open", false) ? "idle"
                         : client.empty()             ? "open"
                                                      : "open by " + client,
                         needs_reset.empty() ? "" : ", not reset since its last client");
  }
  return Outcome{0, json ? list.dump(2) + "\n" : table, ""};
}

}  // namespace umdev::cli
