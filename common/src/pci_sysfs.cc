// Sysfs: links and directories under /sys/bus/pci and /sys/kernel/iommu_groups.
#include "umdev/common/pci_sysfs.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>

namespace umdev::pci {
namespace {

namespace fs = std::filesystem;

// The last component of a sysfs link (a driver's or a group's name), or
// empty when there is no link.
std::string LinkName(const fs::path& link) {
  std::error_code ec;
  const fs::path target = fs::read_symlink(link, ec);
  return ec ? std::string() : target.filename().string();
}

}  // namespace

Result<std::string> NormalizeAddress(std::string_view text) {
  std::string address(text);
  for (char& c : address) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (address.size() == 7) address = "0000:" + address;
  static constexpr std::string_view kShape = "xxxx:xx:xx.x";
  bool ok = address.size() == kShape.size();
  for (size_t i = 0; ok && i < address.size(); ++i) {
    ok = kShape[i] == 'x' ? std::isxdigit(static_cast<unsigned char>(address[i])) != 0
                          : address[i] == kShape[i];
  }
  if (ok) {
    unsigned slot = 0;
    std::from_chars(address.data() + 8, address.data() + 10, slot, 16);
    ok = slot < 32 && address[11] >= '0' && address[11] <= '7';
  }
  if (!ok) {
    return Fail(EINVAL, fmt::format("'{}' is not a PCI address (DDDD:BB:DD.F or BB:DD.F)", text));
  }
  return address;
}

std::string Sysfs::DevicePath(const std::string& address) const {
  return root_ + "/bus/pci/devices/" + address;
}

bool Sysfs::Exists(const std::string& address) const {
  std::error_code ec;
  return fs::exists(DevicePath(address), ec);
}

std::string Sysfs::DriverOf(const std::string& address) const {
  return LinkName(DevicePath(address) + "/driver");
}

std::optional<unsigned> Sysfs::IommuGroupOf(const std::string& address) const {
  const std::string name = LinkName(DevicePath(address) + "/iommu_group");
  unsigned group = 0;
  const auto [end, error] = std::from_chars(name.data(), name.data() + name.size(), group);
  if (name.empty() || error != std::errc() || end != name.data() + name.size()) return std::nullopt;
  return group;
}

std::vector<std::string> Sysfs::GroupMembers(unsigned group) const {
  std::vector<std::string> members;
  std::error_code ec;
  for (const auto& entry :
       fs::directory_iterator(fmt::format("{}/kernel/iommu_groups/{}/devices", root_, group), ec)) {
    members.push_back(entry.path().filename().string());
  }
  std::sort(members.begin(), members.end());
  return members;
}

std::string Sysfs::BindCommands(const std::string& address, const std::string& driver) const {
  std::string commands = fmt::format(
      "modprobe vfio-pci; echo vfio-pci > {}/driver_override; ", DevicePath(address));
  if (!driver.empty()) {
    commands += fmt::format("echo {} > {}/bus/pci/drivers/{}/unbind; ", address, root_, driver);
  }
  return commands + fmt::format("echo {} > {}/bus/pci/drivers_probe", address, root_);
}

}  // namespace umdev::pci
