// VfioPciTransport's refusals before any ioctl, against a scratch sysfs and
// /dev: a bad address, a device that is missing, bound to another driver or
// to none, a guest without an IOMMU, and a kernel without VFIO. What works
// on a real vfio-pci device is gpu_linux_guest_test's.
#include "umdev/gpu_guest/vfio_pci_transport.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace umdev::gpu_guest {
namespace {

namespace fs = std::filesystem;

class VfioPciTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/vfio-pci-transport-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    root_ = dir;
    device_ = root_ / "sys/bus/pci/devices/0000:00:04.0";
    paths_.sysfs = (root_ / "sys").string();
    paths_.dev = (root_ / "dev").string();
    fs::create_directories(root_ / "dev");
    fs::create_directories(root_ / "sys/bus/pci/drivers/nvme");
    fs::create_directories(root_ / "sys/bus/pci/drivers/vfio-pci");
    fs::create_directories(root_ / "sys/kernel/iommu_groups/7");
    fs::create_directories(device_);
  }
  void TearDown() override { fs::remove_all(root_); }
  void BindTo(const std::string& driver) {
    fs::create_directory_symlink(root_ / "sys/bus/pci/drivers" / driver, device_ / "driver");
  }

  fs::path root_;
  fs::path device_;
  VfioPciPaths paths_;
};

TEST_F(VfioPciTransportTest, RefusesAnAddressWithNoDevice) {
  auto missing = VfioPciTransport::Open("00:05.0", paths_);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, ENODEV);
  EXPECT_NE(missing.error().Describe().find("no PCI device 0000:00:05.0"), std::string::npos);
  EXPECT_EQ(VfioPciTransport::Open("not-an-address", paths_).error().code, EINVAL);
}

TEST_F(VfioPciTransportTest, SaysHowToBindADeviceWithNoDriver) {
  auto unbound = VfioPciTransport::Open("00:04.0", paths_);
  ASSERT_FALSE(unbound.has_value());
  EXPECT_EQ(unbound.error().code, EBUSY);
  const std::string text = unbound.error().Describe();
  EXPECT_NE(text.find("bound to no driver"), std::string::npos) << text;
  EXPECT_NE(text.find("echo vfio-pci > " + paths_.sysfs +
                      "/bus/pci/devices/0000:00:04.0/driver_override"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("echo 0000:00:04.0 > " + paths_.sysfs + "/bus/pci/drivers_probe"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("unbind"), std::string::npos) << "nothing to unbind: " << text;
}

TEST_F(VfioPciTransportTest, SaysHowToTakeADeviceFromAnotherDriver) {
  BindTo("nvme");
  auto taken = VfioPciTransport::Open("0000:00:04.0", paths_);
  ASSERT_FALSE(taken.has_value());
  EXPECT_EQ(taken.error().code, EBUSY);
  const std::string text = taken.error().Describe();
  EXPECT_NE(text.find("bound to nvme, not vfio-pci"), std::string::npos) << text;
  EXPECT_NE(text.find("echo 0000:00:04.0 > " + paths_.sysfs + "/bus/pci/drivers/nvme/unbind"),
            std::string::npos)
      << text;
}

TEST_F(VfioPciTransportTest, RefusesAGuestWithoutAnIommu) {
  BindTo("vfio-pci");
  auto no_group = VfioPciTransport::Open("00:04.0", paths_);
  ASSERT_FALSE(no_group.has_value());
  EXPECT_EQ(no_group.error().code, ENODEV);
  EXPECT_NE(no_group.error().Describe().find("intel_iommu=on"), std::string::npos);
  EXPECT_NE(no_group.error().Describe().find("caching-mode=on"), std::string::npos);
}

TEST_F(VfioPciTransportTest, RefusesAKernelWithoutVfio) {
  BindTo("vfio-pci");
  fs::create_directory_symlink(root_ / "sys/kernel/iommu_groups/7", device_ / "iommu_group");
  auto no_vfio = VfioPciTransport::Open("00:04.0", paths_);
  ASSERT_FALSE(no_vfio.has_value());
  EXPECT_EQ(no_vfio.error().code, ENOENT);
  EXPECT_NE(no_vfio.error().Describe().find(paths_.dev + "/vfio/vfio"), std::string::npos);
}

}  // namespace
}  // namespace umdev::gpu_guest
