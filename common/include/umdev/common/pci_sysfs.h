// PCI functions as Linux's sysfs shows them (/sys/bus/pci): addresses, the
// driver a function is bound to, its IOMMU group and the group's members,
// and the commands that hand a function to vfio-pci. Shared by the gpu
// runtime's guest transport and the passthrough driver.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"

namespace umdev::pci {

// "DDDD:BB:DD.F" from "DDDD:BB:DD.F" or "BB:DD.F" (domain 0000), lower
// case. Errors: EINVAL anything else (a path, a slot over 31, a function
// over 7).
Result<std::string> NormalizeAddress(std::string_view text);

// Reads a sysfs tree; |root| is "/sys" except in tests. Addresses passed in
// are normalized ones. Any thread.
class Sysfs {
 public:
  explicit Sysfs(std::string root = "/sys") : root_(std::move(root)) {}

  const std::string& root() const { return root_; }
  // ROOT/bus/pci/devices/ADDRESS.
  std::string DevicePath(const std::string& address) const;
  bool Exists(const std::string& address) const;
  // The bound driver's name; empty when none.
  std::string DriverOf(const std::string& address) const;
  // The IOMMU group's number; nullopt when the function has none (no IOMMU).
  std::optional<unsigned> IommuGroupOf(const std::string& address) const;
  // Every function in IOMMU group |group|, sorted.
  std::vector<std::string> GroupMembers(unsigned group) const;
  // The shell commands that bind |address| (now bound to |driver|, or to
  // none when empty) to vfio-pci, as driverctl does: driver_override,
  // unbind, drivers_probe.
  std::string BindCommands(const std::string& address, const std::string& driver) const;

 private:
  std::string root_;
};

}  // namespace umdev::pci
