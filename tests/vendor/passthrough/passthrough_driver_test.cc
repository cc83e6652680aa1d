// PassthroughDriver against a scripted kernel and a scratch sysfs: what it
// refuses before registering, the device it registers with the core, a
// session's container and device fd, and the clean-up between clients.
#include "umdev/passthrough/passthrough_driver.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "umdev/mdev_core/region_info.h"
#include "vendor/passthrough/scripted_kernel.h"

namespace umdev::passthrough {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::ScriptedKernel;

class PassthroughDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/passthrough-driver-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    root_ = dir;
    fs::create_directories(root_ / "bus/pci/drivers/vfio-pci");
    fs::create_directories(root_ / "bus/pci/drivers/nvme");
    fs::create_directories(root_ / "kernel/iommu_groups/7/devices");
    Function("0000:01:00.0", "vfio-pci", true);
    Function("0000:02:00.0", "nvme", true);
    Function("0000:03:00.0", "vfio-pci", false);
    umdev::RegionInfo bar0;
    bar0.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP;
    bar0.size = 0x1000;
    kernel_.region_replies[0] = EncodeRegionInfo(0, bar0, 0x10000000000, 4096);
  }
  void TearDown() override {
    driver_.reset();
    fs::remove_all(root_);
  }
  void Function(const std::string& address, const std::string& driver, bool in_group) {
    const fs::path device = root_ / "bus/pci/devices" / address;
    fs::create_directories(device);
    fs::create_directory_symlink(root_ / "bus/pci/drivers" / driver, device / "driver");
    if (in_group) fs::create_directory_symlink(root_ / "kernel/iommu_groups/7", device / "iommu_group");
  }

  fs::path root_;
  ScriptedKernel kernel_;
  Registry registry_{RegistryOptions{.removal_bound = 200ms, .request_interval = 20ms}};
  std::unique_ptr<PassthroughDriver> driver_;
};

TEST_F(PassthroughDriverTest, RefusesWhatTheHostHasNotHandedOver) {
  driver_ = std::make_unique<PassthroughDriver>(registry_, kernel_, pci::Sysfs(root_.string()));
  EXPECT_EQ(driver_->Add("not-a-bdf").error().code, EINVAL);
  EXPECT_EQ(driver_->Add("0000:09:00.0").error().code, ENODEV);
  auto taken = driver_->Add("02:00.0");
  ASSERT_FALSE(taken.has_value());
  EXPECT_EQ(taken.error().code, EBUSY);
  EXPECT_NE(taken.error().Describe().find("bound to nvme, not vfio-pci"), std::string::npos);
  EXPECT_NE(taken.error().Describe().find("umdevctl passthrough bind 0000:02:00.0"),
            std::string::npos);
  auto no_iommu = driver_->Add("0000:03:00.0");
  ASSERT_FALSE(no_iommu.has_value());
  EXPECT_EQ(no_iommu.error().code, ENODEV);
  EXPECT_NE(no_iommu.error().Describe().find("intel_iommu=on"), std::string::npos);
  kernel_.group_flags = 0;
  EXPECT_EQ(driver_->Add("0000:01:00.0").error().code, EBUSY) << "not viable";
  EXPECT_TRUE(registry_.BusDevices().empty());
  EXPECT_TRUE(driver_->Devices().empty());
}

TEST_F(PassthroughDriverTest, ASessionGetsItsOwnContainerAndLeavesTheDeviceClean) {
  driver_ = std::make_unique<PassthroughDriver>(registry_, kernel_, pci::Sysfs(root_.string()));
  ASSERT_TRUE(driver_->Add("01:00.0").has_value());
  EXPECT_EQ(driver_->Add("0000:01:00.0").error().code, EEXIST);
  const auto devices = registry_.BusDevices();
  ASSERT_EQ(devices.size(), 1u);
  EXPECT_EQ(devices[0].name, "0000:01:00.0");
  EXPECT_EQ(devices[0].driver, "passthrough");
  EXPECT_EQ(devices[0].iommu_group, 7u);

  kernel_.device_info.flags |= VFIO_DEVICE_FLAGS_RESET;
  for (int session = 0; session < 2; ++session) {
    auto group = registry_.FindGroupOfDevice("0000:01:00.0").value();
    auto file = group->Open().value();
    auto container = registry_.CreateContainer();
    ASSERT_TRUE(file->SetContainer(container).has_value());
    ASSERT_TRUE(container->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
    EXPECT_EQ(kernel_.set_container_calls, session + 1) << "a kernel container per session";
    auto device = file->GetDeviceFd("0000:01:00.0");
    ASSERT_TRUE(device.has_value()) << device.error().Describe();
    auto region = (*device)->GetRegionInfo(0);
    ASSERT_TRUE(region.has_value()) << region.error().Describe();
    EXPECT_EQ(region->mmap_offset, 0x10000000000u);
    EXPECT_GE(region->mmap_fd, 0) << "the kernel device fd, for the client to map";
    // DMA goes to the kernel container; no fd is refused with the fix.
    DmaMapRequest no_fd;
    no_fd.iova = 0x100000;
    no_fd.size = 0x1000;
    no_fd.prot = VFIO_DMA_MAP_FLAG_READ;
    auto refused = container->iommu()->Map(std::move(no_fd));
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().Describe().find("share=on"), std::string::npos);
    const int irq_calls = kernel_.set_irqs_calls;
    const int resets = kernel_.resets;
    device->reset();  // The client goes: interrupts off, function reset.
    EXPECT_EQ(kernel_.set_irqs_calls, irq_calls + static_cast<int>(kernel_.device_info.num_irqs));
    EXPECT_EQ(kernel_.resets, resets + 1);
  }
  EXPECT_EQ(kernel_.unset_container_calls, 2);

  ASSERT_TRUE(driver_->Remove("0000:01:00.0").has_value());
  EXPECT_TRUE(registry_.BusDevices().empty());
  EXPECT_EQ(driver_->Remove("0000:01:00.0").error().code, ENODEV);
}

// Two functions of one group open in one session: closing the first must
// not bus-reset the second under its user; the last close does.
TEST_F(PassthroughDriverTest, ABusResetWaitsForTheGroupsLastClose) {
  Function("0000:01:00.1", "vfio-pci", true);
  driver_ = std::make_unique<PassthroughDriver>(registry_, kernel_, pci::Sysfs(root_.string()));
  ASSERT_TRUE(driver_->Add("0000:01:00.0").has_value());
  ASSERT_TRUE(driver_->Add("0000:01:00.1").has_value());
  kernel_.hot_reset_error = 0;
  kernel_.hot_reset_devices = {{7, 0, 1, 0}, {7, 0, 1, 1}};
  auto group = registry_.FindGroup(7).value();
  auto file = group->Open().value();
  auto container = registry_.CreateContainer();
  ASSERT_TRUE(file->SetContainer(container).has_value());
  ASSERT_TRUE(container->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
  auto first = file->GetDeviceFd("0000:01:00.0");
  auto second = file->GetDeviceFd("0000:01:00.1");
  ASSERT_TRUE(first.has_value() && second.has_value());
  first->reset();
  EXPECT_EQ(kernel_.hot_resets, 0) << "the other function is still in use";
  second->reset();
  EXPECT_EQ(kernel_.hot_resets, 1) << "the group's last close resets the bus";
}

}  // namespace
}  // namespace umdev::passthrough
