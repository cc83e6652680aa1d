// pci::NormalizeAddress and pci::Sysfs over a scratch tree shaped like
// /sys/bus/pci and /sys/kernel/iommu_groups.
#include "umdev/common/pci_sysfs.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

namespace umdev::pci {
namespace {

namespace fs = std::filesystem;

TEST(PciAddressTest, AcceptsBothFormsAndRefusesTheRest) {
  EXPECT_EQ(NormalizeAddress("00:04.0").value(), "0000:00:04.0");
  EXPECT_EQ(NormalizeAddress("0000:3B:1f.7").value(), "0000:3b:1f.7");
  for (const char* bad : {"", "00:04", "0000:00:04", "0000:00:20.0", "00:04.8", "zz:04.0",
                          "0000-00:04.0", "0000:00:04.0 ", "../../../x", "0000:00:1g.0"}) {
    auto refused = NormalizeAddress(bad);
    ASSERT_FALSE(refused.has_value()) << bad;
    EXPECT_EQ(refused.error().code, EINVAL) << bad;
  }
}

class PciSysfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/pci-sysfs-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    root_ = dir;
    fs::create_directories(root_ / "bus/pci/drivers/e1000e");
    fs::create_directories(root_ / "kernel/iommu_groups/12/devices");
    for (const char* address : {"0000:01:00.0", "0000:01:00.1"}) {
      const fs::path device = root_ / "bus/pci/devices" / address;
      fs::create_directories(device);
      fs::create_directory_symlink(root_ / "kernel/iommu_groups/12", device / "iommu_group");
      fs::create_directory_symlink(device, root_ / "kernel/iommu_groups/12/devices" / address);
    }
    fs::create_directory_symlink(root_ / "bus/pci/drivers/e1000e",
                                 root_ / "bus/pci/devices/0000:01:00.1/driver");
    fs::create_directories(root_ / "bus/pci/devices/0000:00:1f.0");
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path root_;
};

TEST_F(PciSysfsTest, ReadsDriversGroupsAndMembers) {
  const Sysfs sysfs(root_.string());
  EXPECT_TRUE(sysfs.Exists("0000:01:00.0"));
  EXPECT_FALSE(sysfs.Exists("0000:02:00.0"));
  EXPECT_EQ(sysfs.DriverOf("0000:01:00.0"), "");
  EXPECT_EQ(sysfs.DriverOf("0000:01:00.1"), "e1000e");
  EXPECT_EQ(sysfs.IommuGroupOf("0000:01:00.0"), 12u);
  EXPECT_EQ(sysfs.IommuGroupOf("0000:00:1f.0"), std::nullopt) << "no IOMMU";
  EXPECT_EQ(sysfs.GroupMembers(12), (std::vector<std::string>{"0000:01:00.0", "0000:01:00.1"}));
  EXPECT_TRUE(sysfs.GroupMembers(13).empty());
}

TEST_F(PciSysfsTest, BindCommandsUnbindOnlyFromADriver) {
  const Sysfs sysfs(root_.string());
  const std::string devices = root_.string() + "/bus/pci/devices/";
  EXPECT_EQ(sysfs.BindCommands("0000:01:00.0", ""),
            "modprobe vfio-pci; echo vfio-pci > " + devices +
                "0000:01:00.0/driver_override; echo 0000:01:00.0 > " + root_.string() +
                "/bus/pci/drivers_probe");
  EXPECT_EQ(sysfs.BindCommands("0000:01:00.1", "e1000e"),
            "modprobe vfio-pci; echo vfio-pci > " + devices +
                "0000:01:00.1/driver_override; echo 0000:01:00.1 > " + root_.string() +
                "/bus/pci/drivers/e1000e/unbind; echo 0000:01:00.1 > " + root_.string() +
                "/bus/pci/drivers_probe");
}

}  // namespace
}  // namespace umdev::pci
