// Registry::RegisterDevice: devices a bus driver registers beside the mdevs
// (kernel vfio_register_group_dev), in real IOMMU groups that may hold
// several, whose container takes the group's own IOMMU.
#include <gtest/gtest.h>
#include <linux/vfio.h>

#include <atomic>

#include "fakes/fake_iommu.h"
#include "fakes/test_parent.h"
#include "umdev/mdev_core/registry.h"

namespace umdev {
namespace {

using ::umdev::testing::FakeIommuDriver;
using ::umdev::testing::TestDevice;
using ::umdev::testing::TestParentDriver;
using namespace std::chrono_literals;

// Records the observer calls, and refuses PrepareDevice when told.
class Recorder final : public RegistryObserver {
 public:
  Result<void> PrepareDevice(const std::string& name) override {
    events.push_back("prepare " + name);
    if (refuse) return Fail(EMFILE, "no socket left");
    return {};
  }
  void AbandonDevice(const std::string& name) override { events.push_back("abandon " + name); }
  void OnDeviceRegistered(const BusDeviceStatus& device) override {
    events.push_back("registered " + device.name);
  }
  void OnDeviceUnregistered(const BusDeviceStatus& device) override {
    events.push_back("unregistered " + device.name);
  }
  std::vector<std::string> events;
  bool refuse = false;
};

class RegistryBusDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override { registry_.AddObserver(&recorder_); }
  void TearDown() override { registry_.RemoveObserver(&recorder_); }

  BusDeviceSpec Spec(const std::string& name, unsigned group) {
    BusDeviceSpec spec;
    spec.name = name;
    spec.driver = "passthrough";
    spec.iommu_group = group;
    spec.iommu_driver = iommu_;
    spec.probe = [this](Device& device) -> Result<std::unique_ptr<DeviceOps>> {
      ++probes_;
      return std::make_unique<TestDevice>(device, counters_, /*has_listener=*/true,
                                          /*pins_pages=*/false, [] {});
    };
    return spec;
  }

  Registry registry_{RegistryOptions{.removal_bound = 300ms, .request_interval = 20ms}};
  Recorder recorder_;
  std::shared_ptr<FakeIommuDriver> iommu_ = std::make_shared<FakeIommuDriver>();
  std::shared_ptr<TestDevice::Counters> counters_ = std::make_shared<TestDevice::Counters>();
  std::atomic<int> probes_{0};
};

TEST_F(RegistryBusDeviceTest, DevicesOfOneGroupShareItAndOpenInOneContainer) {
  ASSERT_TRUE(registry_.RegisterDevice(Spec("0000:01:00.0", 12)).has_value());
  ASSERT_TRUE(registry_.RegisterDevice(Spec("0000:01:00.1", 12)).has_value());
  ASSERT_TRUE(registry_.RegisterDevice(Spec("0000:02:00.0", 13)).has_value());
  const auto devices = registry_.BusDevices();
  ASSERT_EQ(devices.size(), 3u);
  EXPECT_EQ(devices[0].name, "0000:01:00.0");
  EXPECT_EQ(devices[0].driver, "passthrough");
  EXPECT_EQ(devices[1].iommu_group, 12u);
  EXPECT_EQ(devices[2].iommu_group, 13u);

  auto group = registry_.FindGroupOfDevice("0000:01:00.1");
  ASSERT_TRUE(group.has_value());
  EXPECT_EQ((*group)->id(), 12u);
  EXPECT_EQ((*group)->devices().size(), 2u);
  EXPECT_EQ(registry_.FindGroup(12).value(), *group);
  EXPECT_EQ(registry_.FindGroupOfDevice("0000:01:00.0").value(), *group);

  // The group's own IOMMU backs its container, and both devices open in it.
  auto file = (*group)->Open();
  ASSERT_TRUE(file.has_value());
  auto container = registry_.CreateContainer();
  ASSERT_TRUE((*file)->SetContainer(container).has_value());
  ASSERT_TRUE(container->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
  EXPECT_EQ(iommu_->live_backends(), 1);
  auto first = (*file)->GetDeviceFd("0000:01:00.0");
  auto second = (*file)->GetDeviceFd("0000:01:00.1");
  ASSERT_TRUE(first.has_value()) << first.error().Describe();
  ASSERT_TRUE(second.has_value()) << second.error().Describe();
  EXPECT_EQ((*second)->device().name(), "0000:01:00.1");
  EXPECT_EQ((*file)->GetDeviceFd("0000:02:00.0").error().code, ENODEV) << "another group's";
  EXPECT_TRUE(registry_.BusDevices()[0].open);

  // A device does not join a group in use.
  auto late = registry_.RegisterDevice(Spec("0000:01:00.2", 12));
  ASSERT_FALSE(late.has_value());
  EXPECT_EQ(late.error().code, EBUSY);
  EXPECT_EQ(registry_.BusDevices().size(), 3u);
}

TEST_F(RegistryBusDeviceTest, NamesAndGroupsAreCheckedBeforeAnyProbe) {
  ASSERT_TRUE(registry_.RegisterDevice(Spec("0000:01:00.0", 12)).has_value());
  EXPECT_EQ(registry_.RegisterDevice(Spec("0000:01:00.0", 14)).error().code, EEXIST);
  for (const std::string& bad :
       std::vector<std::string>{"", "a/b", ".", "..", std::string(65, 'x')}) {
    EXPECT_EQ(registry_.RegisterDevice(Spec(bad, 14)).error().code, EINVAL) << bad;
  }
  BusDeviceSpec no_probe = Spec("0000:03:00.0", 14);
  no_probe.probe = nullptr;
  EXPECT_EQ(registry_.RegisterDevice(std::move(no_probe)).error().code, EINVAL);
  EXPECT_EQ(probes_, 1);

  // mdevs and real groups do not share numbers or names.
  ASSERT_TRUE(registry_.RegisterParent(std::make_shared<TestParentDriver>(
                                           TestParentDriver::Options{}))
                  .has_value());
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", testing::kUuid1).has_value());
  const unsigned mdev_group = registry_.FindMdev(testing::kUuid1)->iommu_group;
  EXPECT_NE(mdev_group, 12u) << "an emulated group never takes a real group's number";
  EXPECT_EQ(registry_.RegisterDevice(Spec("0000:04:00.0", mdev_group)).error().code, EBUSY);
  EXPECT_EQ(registry_.RegisterDevice(Spec(testing::kUuid1.ToString(), 20)).error().code, EEXIST);
  EXPECT_EQ(registry_.FindGroupOfDevice(testing::kUuid1.ToString()).value()->id(), mdev_group);
  EXPECT_EQ(registry_.FindGroupOfDevice("0000:09:00.0").error().code, ENODEV);
}

TEST_F(RegistryBusDeviceTest, AFailedProbeOrARefusingObserverLeavesNothing) {
  BusDeviceSpec failing = Spec("0000:01:00.0", 12);
  failing.probe = [](Device&) -> Result<std::unique_ptr<DeviceOps>> {
    return Fail(EIO, "the device does not answer");
  };
  auto probe_failed = registry_.RegisterDevice(std::move(failing));
  ASSERT_FALSE(probe_failed.has_value());
  EXPECT_EQ(probe_failed.error().code, EIO);

  recorder_.refuse = true;
  auto refused = registry_.RegisterDevice(Spec("0000:01:00.0", 12));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, EMFILE);
  EXPECT_TRUE(registry_.BusDevices().empty());
  EXPECT_EQ(registry_.FindGroup(12).error().code, ENODEV);
  EXPECT_EQ(counters_->removed, 1) << "the refused device's vendor object is destroyed";

  recorder_.refuse = false;
  recorder_.events.clear();
  ASSERT_TRUE(registry_.RegisterDevice(Spec("0000:01:00.0", 12)).has_value());
  EXPECT_EQ(recorder_.events,
            (std::vector<std::string>{"prepare 0000:01:00.0", "registered 0000:01:00.0"}));
}

TEST_F(RegistryBusDeviceTest, UnregisteringWaitsForTheUserAndTheGroupGoesWithItsLast) {
  ASSERT_TRUE(registry_.RegisterDevice(Spec("0000:01:00.0", 12)).has_value());
  ASSERT_TRUE(registry_.RegisterDevice(Spec("0000:01:00.1", 12)).has_value());
  auto group = registry_.FindGroup(12).value();
  {
    auto file = group->Open().value();
    auto container = registry_.CreateContainer();
    ASSERT_TRUE(file->SetContainer(container).has_value());
    ASSERT_TRUE(container->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
    auto open = file->GetDeviceFd("0000:01:00.0").value();
    // The user does not let go: revoked after the bound.
    ASSERT_TRUE(registry_.UnregisterDevice("0000:01:00.0").has_value());
    EXPECT_GE(counters_->requests, 1);
    std::byte byte[1];
    EXPECT_EQ(open->RegionRead(0, 0, byte).error().code, ENODEV);
  }
  EXPECT_EQ(registry_.UnregisterDevice("0000:01:00.0").error().code, ENODEV);
  EXPECT_EQ(group->devices().size(), 1u);
  EXPECT_EQ(registry_.FindGroup(12).value(), group);
  ASSERT_TRUE(registry_.UnregisterDevice("0000:01:00.1").has_value());
  EXPECT_EQ(registry_.FindGroup(12).error().code, ENODEV);
  EXPECT_TRUE(registry_.BusDevices().empty());
  EXPECT_EQ(recorder_.events.back(), "unregistered 0000:01:00.1");
}

TEST_F(RegistryBusDeviceTest, AContainerTakesTheRealGroupsIommuOnly) {
  ASSERT_TRUE(registry_.RegisterDevice(Spec("0000:01:00.0", 12)).has_value());
  auto file = registry_.FindGroup(12).value()->Open().value();
  auto container = registry_.CreateContainer();
  ASSERT_TRUE(file->SetContainer(container).has_value());
  auto refused = container->SetIommu(VFIO_TYPE1_IOMMU);
  ASSERT_FALSE(refused.has_value()) << "the fake IOMMU has type1v2 only";
  EXPECT_EQ(refused.error().code, EINVAL);
  EXPECT_EQ(iommu_->live_backends(), 0);
}

}  // namespace
}  // namespace umdev
