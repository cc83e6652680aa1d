// Registry: parent registration and instance lifecycle, with the kernel's errnos.
#include "umdev/mdev_core/registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/vfio.h>

#include <future>
#include <thread>

#include "fakes/fake_iommu.h"
#include "fakes/test_parent.h"

namespace umdev {
namespace {

using ::testing::ElementsAre;
using ::testing::Field;
using ::umdev::testing::FakeIommuDriver;
using ::umdev::testing::TestParentDriver;
using namespace std::chrono_literals;

using testing::kUuid1;
using testing::kUuid2;
const Uuid kUuid3 = Uuid::Parse("33333333-3333-4333-8333-333333333333").value();

class RegistryTest : public ::testing::Test {
 protected:
  std::shared_ptr<TestParentDriver> AddParent(TestParentDriver::Options options = {}) {
    auto parent = std::make_shared<TestParentDriver>(std::move(options));
    EXPECT_TRUE(registry_.RegisterParent(parent).has_value());
    return parent;
  }

  Registry registry_{RegistryOptions{.removal_bound = 300ms, .request_interval = 20ms}};
};

TEST_F(RegistryTest, RegisteredParentListsItsTypesWithDriverPrefix) {
  AddParent();
  const auto parents = registry_.Parents();
  ASSERT_EQ(parents.size(), 1u);
  EXPECT_EQ(parents[0].name, "test_parent");
  EXPECT_EQ(parents[0].driver, "test");
  ASSERT_EQ(parents[0].types.size(), 2u);
  EXPECT_EQ(parents[0].types[0].id, "test-a");
  EXPECT_EQ(parents[0].types[0].name, "Type A");
  EXPECT_EQ(parents[0].types[0].description, "first test type");
  EXPECT_EQ(parents[0].types[0].device_api, "vfio-pci");
  EXPECT_EQ(parents[0].types[0].available_instances, 4u);
  EXPECT_EQ(parents[0].types[1].name, "b");  // No pretty name: the sysfs name.
}

TEST_F(RegistryTest, DuplicateParentNameIsEexist) {
  AddParent();
  auto again = registry_.RegisterParent(std::make_shared<TestParentDriver>(TestParentDriver::Options{}));
  EXPECT_EQ(again.error().code, EEXIST);
}

TEST_F(RegistryTest, ParentWithoutTypesIsEinval) {
  auto result = registry_.RegisterParent(
      std::make_shared<TestParentDriver>(TestParentDriver::Options{.types = {}}));
  EXPECT_EQ(result.error().code, EINVAL);
}

TEST_F(RegistryTest, ParentWithDuplicateTypeIsEinval) {
  auto result = registry_.RegisterParent(std::make_shared<TestParentDriver>(
      TestParentDriver::Options{.types = {{"x", "", ""}, {"x", "", ""}}}));
  EXPECT_EQ(result.error().code, EINVAL);
}

TEST_F(RegistryTest, ParentWithoutDeviceApiIsEinval) {
  auto result = registry_.RegisterParent(
      std::make_shared<TestParentDriver>(TestParentDriver::Options{.device_api = ""}));
  EXPECT_EQ(result.error().code, EINVAL);
}

TEST_F(RegistryTest, NullParentIsEinval) {
  EXPECT_EQ(registry_.RegisterParent(nullptr).error().code, EINVAL);
}

TEST_F(RegistryTest, CreateMakesAnActiveInstanceAndTakesACounterSlot) {
  AddParent();
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
  const auto mdevs = registry_.Mdevs();
  ASSERT_EQ(mdevs.size(), 1u);
  EXPECT_EQ(mdevs[0].uuid, kUuid1);
  EXPECT_EQ(mdevs[0].parent, "test_parent");
  EXPECT_EQ(mdevs[0].type_id, "test-a");
  const auto type = registry_.Parents()[0].types[0];
  EXPECT_EQ(type.available_instances, 3u);
  EXPECT_THAT(type.devices, ElementsAre(kUuid1));
}

TEST_F(RegistryTest, CreateUnderUnknownParentIsEnodev) {
  EXPECT_EQ(registry_.CreateMdev("nope", "test-a", kUuid1).error().code, ENODEV);
}

TEST_F(RegistryTest, CreateOfUnknownTypeIsEnodev) {
  AddParent();
  EXPECT_EQ(registry_.CreateMdev("test_parent", "test-z", kUuid1).error().code, ENODEV);
}

TEST_F(RegistryTest, UuidInUseUnderAnyParentIsEexist) {
  AddParent();
  AddParent({.parent_name = "other_parent"});
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
  EXPECT_EQ(registry_.CreateMdev("other_parent", "test-a", kUuid1).error().code, EEXIST);
  EXPECT_EQ(registry_.CreateMdev("test_parent", "test-b", kUuid1).error().code, EEXIST);
}

TEST_F(RegistryTest, SharedCounterAtZeroIsEusers) {
  AddParent({.max_instances = 1});
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
  EXPECT_EQ(registry_.CreateMdev("test_parent", "test-b", kUuid2).error().code, EUSERS);
  EXPECT_EQ(registry_.Parents()[0].types[1].available_instances, 0u);
}

TEST_F(RegistryTest, RemovalGivesTheCounterSlotBack) {
  AddParent({.max_instances = 1});
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
  ASSERT_TRUE(registry_.RemoveMdev(kUuid1).has_value());
  EXPECT_EQ(registry_.Parents()[0].types[0].available_instances, 1u);
  EXPECT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid2).has_value());
}

TEST_F(RegistryTest, ProbeErrorPropagatesAndLeavesNothingBehind) {
  auto parent = AddParent({.max_instances = 1});
  parent->FailNextProbe(ENOMEM);
  auto result = registry_.CreateMdev("test_parent", "test-a", kUuid1);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code, ENOMEM);
  EXPECT_TRUE(registry_.Mdevs().empty());
  EXPECT_EQ(registry_.Parents()[0].types[0].available_instances, 1u);
  EXPECT_EQ(registry_.FindGroupOf(kUuid1).error().code, ENODEV);
  // The UUID and the slot are free again.
  EXPECT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
}

TEST_F(RegistryTest, PinningDeviceWithoutUnmapListenerIsRefused) {
  auto parent = AddParent({.max_instances = 1, .has_listener = false, .pins_pages = true});
  auto result = registry_.CreateMdev("test_parent", "test-a", kUuid1);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code, EINVAL);
  EXPECT_EQ(parent->counters()->removed, 1);  // The refused device was destroyed.
  EXPECT_TRUE(registry_.Mdevs().empty());
  EXPECT_EQ(registry_.Parents()[0].types[0].available_instances, 1u);
}

TEST_F(RegistryTest, DriverWithoutSharedCounterReportsItsOwnCapacity) {
  AddParent({.max_instances = 0, .per_type_capacity = 1});
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
  const auto types = registry_.Parents()[0].types;
  EXPECT_EQ(types[0].available_instances, 0u);
  EXPECT_EQ(types[1].available_instances, 1u);
  // Without a shared counter the core does not refuse: the driver does.
  EXPECT_EQ(registry_.CreateMdev("test_parent", "test-a", kUuid2).error().code, ENOSPC);
}

TEST_F(RegistryTest, RemoveOfUnknownUuidIsEnodev) {
  EXPECT_EQ(registry_.RemoveMdev(kUuid1).error().code, ENODEV);
}

TEST_F(RegistryTest, RemoveDestroysTheVendorDevice) {
  auto parent = AddParent();
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
  ASSERT_TRUE(registry_.RemoveMdev(kUuid1).has_value());
  EXPECT_EQ(parent->counters()->removed, 1);
  EXPECT_EQ(parent->device(kUuid1), nullptr);
  EXPECT_TRUE(registry_.Mdevs().empty());
}

TEST_F(RegistryTest, SecondRemoveWhileTheFirstWaitsIsEagain) {
  auto parent = AddParent();
  registry_.iommu_drivers().Register(std::make_shared<FakeIommuDriver>()).value();
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
  auto group = registry_.FindGroupOf(kUuid1).value();
  auto file = group->Open().value();
  auto container = registry_.CreateContainer();
  ASSERT_TRUE(file->SetContainer(container).has_value());
  ASSERT_TRUE(container->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();

  std::promise<int> second;
  parent->device(kUuid1)->set_on_request([&, asked = false]() mutable {
    if (asked) return;
    asked = true;
    auto again = registry_.RemoveMdev(kUuid1);
    second.set_value(again.has_value() ? 0 : again.error().code);
  });
  std::thread closer([&] {
    std::this_thread::sleep_for(50ms);
    device.reset();
  });
  ASSERT_TRUE(registry_.RemoveMdev(kUuid1).has_value());
  closer.join();
  EXPECT_EQ(second.get_future().get(), EAGAIN);
}

TEST_F(RegistryTest, UnregisterParentRemovesAllItsInstances) {
  auto parent = AddParent();
  AddParent({.parent_name = "other_parent"});
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-b", kUuid2).has_value());
  ASSERT_TRUE(registry_.CreateMdev("other_parent", "test-a", kUuid3).has_value());
  ASSERT_TRUE(registry_.UnregisterParent("test_parent").has_value());
  EXPECT_EQ(parent->counters()->removed, 2);
  EXPECT_THAT(registry_.Mdevs(), ElementsAre(Field(&MdevStatus::uuid, kUuid3)));
  EXPECT_EQ(registry_.CreateMdev("test_parent", "test-a", kUuid1).error().code, ENODEV);
  EXPECT_EQ(registry_.UnregisterParent("test_parent").error().code, ENODEV);
}

TEST_F(RegistryTest, CreateWhileParentUnregistersIsEnodev) {
  auto parent = AddParent();
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
  // Keep the device open so unregistration waits, then create meanwhile.
  registry_.iommu_drivers().Register(std::make_shared<FakeIommuDriver>()).value();
  auto file = registry_.FindGroupOf(kUuid1).value()->Open().value();
  auto container = registry_.CreateContainer();
  ASSERT_TRUE(file->SetContainer(container).has_value());
  ASSERT_TRUE(container->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();
  std::promise<std::pair<int, int>> during;
  parent->device(kUuid1)->set_on_request([&, asked = false]() mutable {
    if (asked) return;
    asked = true;
    during.set_value({registry_.CreateMdev("test_parent", "test-a", kUuid2).error().code,
                      registry_.RemoveMdev(kUuid1).error().code});
  });
  ASSERT_TRUE(registry_.UnregisterParent("test_parent").has_value());
  const auto [create_errno, remove_errno] = during.get_future().get();
  EXPECT_EQ(create_errno, ENODEV);
  EXPECT_EQ(remove_errno, ENODEV);
}

TEST_F(RegistryTest, GroupIdsAreTheSmallestFree) {
  AddParent();
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid2).has_value());
  EXPECT_EQ(registry_.FindMdev(kUuid1)->iommu_group, 0u);
  EXPECT_EQ(registry_.FindMdev(kUuid2)->iommu_group, 1u);
  ASSERT_TRUE(registry_.RemoveMdev(kUuid1).has_value());
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid3).has_value());
  EXPECT_EQ(registry_.FindMdev(kUuid3)->iommu_group, 0u);
  EXPECT_EQ(registry_.FindGroup(1).value()->device()->uuid(), kUuid2);
  EXPECT_EQ(registry_.FindGroup(7).error().code, ENODEV);
}

class RecordingObserver : public RegistryObserver {
 public:
  void OnParentRegistered(const std::string& parent) override { events.push_back("+" + parent); }
  void OnParentUnregistered(const std::string& parent) override { events.push_back("-" + parent); }
  void OnMdevCreated(const MdevStatus& m) override { events.push_back("+" + m.uuid.ToString()); }
  void OnMdevRemoved(const MdevStatus& m) override { events.push_back("-" + m.uuid.ToString()); }
  std::vector<std::string> events;
};

TEST_F(RegistryTest, ObserversSeeEveryChangeInOrder) {
  RecordingObserver observer;
  registry_.AddObserver(&observer);
  AddParent();
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
  ASSERT_TRUE(registry_.UnregisterParent("test_parent").has_value());
  registry_.RemoveObserver(&observer);
  EXPECT_THAT(observer.events, ElementsAre("+test_parent", "+" + kUuid1.ToString(),
                                           "-" + kUuid1.ToString(), "-test_parent"));
}

// Prepares instances until told to refuse, recording what it saw.
class PreparingObserver : public RecordingObserver {
 public:
  Result<void> PrepareMdev(const Uuid& uuid) override {
    events.push_back("prepare " + uuid.ToString());
    if (refuse != 0) return Fail(refuse, "refused by the test");
    return {};
  }
  void AbandonMdev(const Uuid& uuid) override { events.push_back("abandon " + uuid.ToString()); }
  int refuse = 0;
};

TEST_F(RegistryTest, AnObserverThatCannotPrepareAnInstanceFailsTheCreateLeavingNothing) {
  PreparingObserver first, second;
  registry_.AddObserver(&first);
  registry_.AddObserver(&second);
  auto parent = AddParent();
  second.refuse = EMFILE;  // The vfio-user server at the descriptor limit.
  auto created = registry_.CreateMdev("test_parent", "test-a", kUuid1);
  ASSERT_FALSE(created.has_value());
  EXPECT_EQ(created.error().code, EMFILE);
  EXPECT_TRUE(registry_.Mdevs().empty());
  EXPECT_EQ(registry_.Parents()[0].types[0].available_instances, 4u);
  EXPECT_EQ(parent->device(kUuid1), nullptr);  // The vendor's device is gone too.
  // The observer that had prepared was told to undo it; none saw a create.
  EXPECT_THAT(first.events, ElementsAre("+test_parent", "prepare " + kUuid1.ToString(),
                                        "abandon " + kUuid1.ToString()));
  EXPECT_THAT(second.events, ElementsAre("+test_parent", "prepare " + kUuid1.ToString()));
  // With the descriptor back, the same UUID is created.
  second.refuse = 0;
  EXPECT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
  EXPECT_EQ(first.events.back(), "+" + kUuid1.ToString());
  registry_.RemoveObserver(&first);
  registry_.RemoveObserver(&second);
}

}  // namespace
}  // namespace umdev
