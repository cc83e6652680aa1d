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
  void Function(const std::string& address, const std::string& driver, bool in_group,
                unsigned group = 7) {
    const fs::path device = root_ / "bus/pci/devices" / address;
    fs::create_directories(device);
    fs::create_directory_symlink(root_ / "bus/pci/drivers" / driver, device / "driver");
    const fs::path group_dir = root_ / "kernel/iommu_groups" / std::to_string(group);
    fs::create_directories(group_dir / "devices");
    if (in_group) fs::create_directory_symlink(group_dir, device / "iommu_group");
  }
  // A client session on |address|: its group in a container of its own.
  struct Session {
    std::shared_ptr<GroupFile> group;
    std::unique_ptr<DeviceFile> device;
  };
  Session Open(const std::string& address) {
    Session session;
    session.group = registry_.FindGroupOfDevice(address).value()->Open().value();
    auto container = registry_.CreateContainer();
    EXPECT_TRUE(session.group->SetContainer(container).has_value());
    EXPECT_TRUE(container->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
    auto device = session.group->GetDeviceFd(address);
    EXPECT_TRUE(device.has_value()) << device.error().Describe();
    if (device.has_value()) session.device = std::move(*device);
    return session;
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

// A bus reset reaching functions of two groups umdevd holds: it takes both
// groups' fds while the other group is idle, and is refused (EBUSY, named)
// while another client uses it; a group umdevd does not hold is EPERM.
TEST_F(PassthroughDriverTest, ABusResetTakesEveryIdleGroupUmdevdHolds) {
  Function("0000:01:00.1", "vfio-pci", true, 8);
  kernel_.groups.insert(8);
  driver_ = std::make_unique<PassthroughDriver>(registry_, kernel_, pci::Sysfs(root_.string()));
  ASSERT_TRUE(driver_->Add("0000:01:00.0").has_value());
  ASSERT_TRUE(driver_->Add("0000:01:00.1").has_value());
  kernel_.hot_reset_error = 0;
  kernel_.hot_reset_devices = {{7, 0, 1, 0}, {8, 0, 1, 1}};

  Session first = Open("0000:01:00.0");
  ASSERT_NE(first.device, nullptr);
  ASSERT_TRUE(first.device->Reset().has_value());
  EXPECT_EQ(kernel_.hot_resets, 1);
  EXPECT_EQ(kernel_.hot_reset_group_fds.size(), 2u) << "both groups' fds";

  Session second = Open("0000:01:00.1");
  ASSERT_NE(second.device, nullptr);
  auto busy = first.device->Reset();
  ASSERT_FALSE(busy.has_value());
  EXPECT_EQ(busy.error().code, EBUSY);
  EXPECT_NE(busy.error().Describe().find("0000:01:00.1, in IOMMU group 8, which another client"),
            std::string::npos)
      << busy.error().Describe();
  EXPECT_EQ(kernel_.hot_resets, 1);
  // The second client leaves: its own bus reset would reach the first's
  // function, so there is none; then the first may reset the bus again.
  second.device.reset();
  second.group.reset();
  EXPECT_EQ(kernel_.hot_resets, 1);
  ASSERT_TRUE(first.device->Reset().has_value());
  EXPECT_EQ(kernel_.hot_resets, 2);

  kernel_.hot_reset_devices.push_back({9, 0, 1, 2 << 3});
  auto foreign = first.device->Reset();
  ASSERT_FALSE(foreign.has_value());
  EXPECT_EQ(foreign.error().code, EPERM);
  EXPECT_NE(foreign.error().Describe().find("which umdevd does not hold"), std::string::npos);
  // The last close with a bus reset still out of reach: the function is
  // left as it is, with a warning; nothing is reset.
  first.device.reset();
  first.group.reset();
  EXPECT_EQ(kernel_.hot_resets, 2);
  kernel_.hot_reset_devices.pop_back();
  Session third = Open("0000:01:00.0");
  ASSERT_NE(third.device, nullptr);
  third.device.reset();
  EXPECT_EQ(kernel_.hot_resets, 3) << "the last close resets the bus, both groups idle";
}

// A function the kernel cannot reset (no FLR, no bus reset) goes to its
// next client with the last one's state: the core's status says so until
// a reset works.
TEST_F(PassthroughDriverTest, AFunctionLeftUnresetIsListedSoUntilAResetWorks) {
  driver_ = std::make_unique<PassthroughDriver>(registry_, kernel_, pci::Sysfs(root_.string()));
  ASSERT_TRUE(driver_->Add("0000:01:00.0").has_value());
  EXPECT_EQ(registry_.BusDevices().at(0).needs_reset, "");
  Session first = Open("0000:01:00.0");
  ASSERT_NE(first.device, nullptr);
  first.device.reset();
  first.group.reset();
  const std::string why = registry_.BusDevices().at(0).needs_reset;
  EXPECT_NE(why.find("no bus reset"), std::string::npos) << why;
  EXPECT_NE(why.find("ENODEV"), std::string::npos) << why;

  // Still marked while the next client has it; its own reset that works
  // (the kernel's function reset) clears the mark.
  Session second = Open("0000:01:00.0");
  ASSERT_NE(second.device, nullptr);
  EXPECT_FALSE(registry_.BusDevices().at(0).needs_reset.empty());
  EXPECT_FALSE(second.device->Reset().has_value());
  kernel_.hot_reset_error = 0;
  kernel_.hot_reset_devices = {{7, 0, 1, 0}};
  ASSERT_TRUE(second.device->Reset().has_value());
  EXPECT_EQ(registry_.BusDevices().at(0).needs_reset, "");
  second.device.reset();
  EXPECT_EQ(registry_.BusDevices().at(0).needs_reset, "") << "reset with its bus at the close";
}

}  // namespace
}  // namespace umdev::passthrough
