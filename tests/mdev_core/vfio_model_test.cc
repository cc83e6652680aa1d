// Container, Group, Device: the VFIO object model and its errnos.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/vfio.h>

#include <future>
#include <thread>

#include "fakes/fake_iommu.h"
#include "fakes/test_parent.h"
#include "umdev/mdev_core/irq_set.h"
#include "umdev/mdev_core/registry.h"

namespace umdev {
namespace {

using ::umdev::testing::FakeIommu;
using ::umdev::testing::FakeIommuDriver;
using ::umdev::testing::TestDevice;
using ::umdev::testing::TestParentDriver;
using namespace std::chrono_literals;

using testing::kUuid1;
using testing::kUuid2;
constexpr uint64_t kIova = 0x100000;

class VfioModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_.iommu_drivers().Register(iommu_driver_).has_value());
    ASSERT_TRUE(registry_.RegisterParent(parent_).has_value());
    ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
    group_ = registry_.FindGroupOf(kUuid1).value();
  }

  // Opens the group, puts it in a new container with a backend.
  std::shared_ptr<GroupFile> OpenInContainer() {
    auto file = group_->Open().value();
    container_ = registry_.CreateContainer();
    EXPECT_TRUE(file->SetContainer(container_).has_value());
    EXPECT_TRUE(container_->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
    return file;
  }

  FakeIommu& iommu() { return static_cast<FakeIommu&>(*container_->iommu()); }
  TestDevice& vendor() { return *parent_->device(kUuid1); }

  Registry registry_{RegistryOptions{.removal_bound = 200ms, .request_interval = 20ms}};
  std::shared_ptr<FakeIommuDriver> iommu_driver_ = std::make_shared<FakeIommuDriver>();
  std::shared_ptr<TestParentDriver> parent_ =
      std::make_shared<TestParentDriver>(TestParentDriver::Options{});
  std::shared_ptr<Group> group_;
  std::shared_ptr<Container> container_;
};

TEST_F(VfioModelTest, SetIommuWithoutGroupIsEinval) {
  auto container = registry_.CreateContainer();
  EXPECT_EQ(container->SetIommu(VFIO_TYPE1v2_IOMMU).error().code, EINVAL);
}

TEST_F(VfioModelTest, SetIommuOfUnsupportedTypeIsEnodev) {
  auto file = group_->Open().value();
  auto container = registry_.CreateContainer();
  ASSERT_TRUE(file->SetContainer(container).has_value());
  EXPECT_FALSE(container->CheckExtension(VFIO_TYPE1_IOMMU));
  EXPECT_EQ(container->SetIommu(VFIO_TYPE1_IOMMU).error().code, ENODEV);
}

TEST_F(VfioModelTest, SecondSetIommuIsEinval) {
  auto file = OpenInContainer();
  EXPECT_EQ(container_->SetIommu(VFIO_TYPE1v2_IOMMU).error().code, EINVAL);
}

TEST_F(VfioModelTest, GroupOpensOnceAtATime) {
  auto file = group_->Open().value();
  EXPECT_EQ(group_->Open().error().code, EBUSY);
  file.reset();
  EXPECT_TRUE(group_->Open().has_value());
}

TEST_F(VfioModelTest, GroupStatusReportsContainer) {
  auto file = group_->Open().value();
  EXPECT_EQ(file->GetStatus(), static_cast<uint32_t>(VFIO_GROUP_FLAGS_VIABLE));
  ASSERT_TRUE(file->SetContainer(registry_.CreateContainer()).has_value());
  EXPECT_EQ(file->GetStatus(),
            static_cast<uint32_t>(VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET));
}

TEST_F(VfioModelTest, SetContainerTwiceIsEinval) {
  auto file = group_->Open().value();
  ASSERT_TRUE(file->SetContainer(registry_.CreateContainer()).has_value());
  EXPECT_EQ(file->SetContainer(registry_.CreateContainer()).error().code, EINVAL);
}

TEST_F(VfioModelTest, GetDeviceFdWithoutIommuIsEinval) {
  auto file = group_->Open().value();
  ASSERT_TRUE(file->SetContainer(registry_.CreateContainer()).has_value());
  EXPECT_EQ(file->GetDeviceFd(kUuid1.ToString()).error().code, EINVAL);
}

TEST_F(VfioModelTest, GetDeviceFdOfWrongNameIsEnodev) {
  auto file = OpenInContainer();
  EXPECT_EQ(file->GetDeviceFd(kUuid2.ToString()).error().code, ENODEV);
}

TEST_F(VfioModelTest, FirstOpenAndLastCloseReachTheVendorOnce) {
  auto file = OpenInContainer();
  auto first = file->GetDeviceFd(kUuid1.ToString()).value();
  auto second = file->GetDeviceFd(kUuid1.ToString()).value();
  EXPECT_EQ(parent_->counters()->opens, 1);
  EXPECT_EQ(iommu().listeners(), 1u);
  first.reset();
  EXPECT_EQ(parent_->counters()->closes, 0);
  second.reset();
  EXPECT_EQ(parent_->counters()->closes, 1);
  EXPECT_EQ(iommu().listeners(), 0u);
}

TEST_F(VfioModelTest, DeviceFileForwardsRegionAccess) {
  auto file = OpenInContainer();
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();
  const std::array<std::byte, 2> id = {std::byte{0x48}, std::byte{0x43}};
  ASSERT_EQ(device->RegionWrite(VFIO_PCI_CONFIG_REGION_INDEX, 0, id).value(), 2u);
  std::array<std::byte, 2> read{};
  ASSERT_EQ(device->RegionRead(VFIO_PCI_CONFIG_REGION_INDEX, 0, read).value(), 2u);
  EXPECT_EQ(read, id);
  EXPECT_EQ(device->GetRegionInfo(VFIO_PCI_CONFIG_REGION_INDEX)->size, 256u);
  EXPECT_EQ(device->GetRegionInfo(99).error().code, EINVAL);
  EXPECT_EQ(device->GetInfo()->num_irqs, static_cast<uint32_t>(VFIO_PCI_NUM_IRQS));
}

TEST_F(VfioModelTest, SetIrqsIsValidatedBeforeTheVendor) {
  auto file = OpenInContainer();
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();
  IrqSet beyond{.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                .index = VFIO_PCI_INTX_IRQ_INDEX, .start = 0, .count = 2, .bools = {}, .fds = {}};
  EXPECT_EQ(device->SetIrqs(beyond).error().code, EINVAL);
  IrqSet no_vectors{.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                    .index = VFIO_PCI_MSI_IRQ_INDEX, .start = 0, .count = 1, .bools = {}, .fds = {}};
  EXPECT_EQ(device->SetIrqs(no_vectors).error().code, EINVAL);
  IrqSet bad_index{.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                   .index = 9, .start = 0, .count = 1, .bools = {}, .fds = {}};
  EXPECT_EQ(device->SetIrqs(bad_index).error().code, EINVAL);
  IrqSet unmask{.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK,
                .index = VFIO_PCI_INTX_IRQ_INDEX, .start = 0, .count = 1, .bools = {}, .fds = {}};
  EXPECT_TRUE(device->SetIrqs(unmask).has_value());
}

TEST_F(VfioModelTest, UnsetContainerWithOpenDeviceIsEbusy) {
  auto file = OpenInContainer();
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();
  EXPECT_EQ(file->UnsetContainer().error().code, EBUSY);
  device.reset();
  EXPECT_TRUE(file->UnsetContainer().has_value());
  EXPECT_EQ(file->UnsetContainer().error().code, EINVAL);
}

TEST_F(VfioModelTest, LastGroupLeavingDeprivilegesTheContainer) {
  auto file = OpenInContainer();
  EXPECT_EQ(iommu_driver_->live_backends(), 1);
  ASSERT_TRUE(file->UnsetContainer().has_value());
  EXPECT_EQ(container_->iommu(), nullptr);
  EXPECT_EQ(container_->group_count(), 0u);
  EXPECT_EQ(iommu_driver_->live_backends(), 0);
}

TEST_F(VfioModelTest, ClosingTheGroupFileLeavesTheContainer) {
  auto file = OpenInContainer();
  file.reset();
  EXPECT_EQ(container_->group_count(), 0u);
  EXPECT_EQ(group_->container(), nullptr);
}

TEST_F(VfioModelTest, DeviceFileKeepsTheGroupFileAlive) {
  auto file = OpenInContainer();
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();
  file.reset();
  EXPECT_TRUE(group_->is_open());
  EXPECT_EQ(container_->group_count(), 1u);
  device.reset();
  EXPECT_FALSE(group_->is_open());
  EXPECT_EQ(container_->group_count(), 0u);
}

TEST_F(VfioModelTest, ExternalUserNeedsAnIommu) {
  auto file = group_->Open().value();
  EXPECT_EQ(ExternalGroupRef::Get(*file).error().code, EINVAL);
  ASSERT_TRUE(file->SetContainer(registry_.CreateContainer()).has_value());
  EXPECT_EQ(ExternalGroupRef::Get(*file).error().code, EINVAL);
}

TEST_F(VfioModelTest, ExternalUserKeepsTheContainerAfterTheGroupFileCloses) {
  auto file = OpenInContainer();
  auto holder = ExternalGroupRef::Get(*file).value();
  EXPECT_EQ(holder.iommu_group_id(), group_->id());
  EXPECT_TRUE(holder.MatchesFile(*file));
  EXPECT_EQ(file->UnsetContainer().error().code, EBUSY);
  file.reset();
  EXPECT_EQ(container_->group_count(), 1u);
  EXPECT_NE(container_->iommu(), nullptr);
  holder.Put();
  EXPECT_EQ(container_->group_count(), 0u);
  EXPECT_EQ(iommu_driver_->live_backends(), 0);
}

TEST_F(VfioModelTest, ExternalUserDoesNotMatchAnotherGroupsFile) {
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid2).has_value());
  auto file = OpenInContainer();
  auto other = registry_.FindGroupOf(kUuid2).value()->Open().value();
  auto holder = ExternalGroupRef::Get(*file).value();
  EXPECT_FALSE(holder.MatchesFile(*other));
}

TEST_F(VfioModelTest, CdevOpenExcludesTheGroupPath) {
  auto space = AddressSpace::Create(registry_.iommu_drivers(), VFIO_TYPE1v2_IOMMU).value();
  auto device = OpenDeviceCdev(group_, space).value();
  EXPECT_EQ(group_->Open().error().code, EBUSY);
  device.reset();
  auto file = group_->Open().value();
  EXPECT_EQ(OpenDeviceCdev(group_, space).error().code, EBUSY);
}

TEST_F(VfioModelTest, CdevDmaGoesToTheBoundAddressSpace) {
  auto space = AddressSpace::Create(registry_.iommu_drivers(), VFIO_TYPE1v2_IOMMU).value();
  ASSERT_TRUE(space->iommu()->Map({.iova = kIova, .size = kPageSize, .prot = kProtRead | kProtWrite,
                                   .fd = {}, .offset = 0}).has_value());
  auto device = OpenDeviceCdev(group_, space).value();
  const std::array<std::byte, 4> data = {std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
  ASSERT_TRUE(vendor().dma().DmaWrite(kIova + 8, data).has_value());
  std::array<std::byte, 4> back{};
  ASSERT_TRUE(space->iommu()->DmaRead(kIova + 8, back).has_value());
  EXPECT_EQ(back, data);
}

TEST_F(VfioModelTest, OpenInAnotherAddressSpaceIsEbusy) {
  auto file = OpenInContainer();
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();
  file.reset();
  auto space = AddressSpace::Create(registry_.iommu_drivers(), VFIO_TYPE1v2_IOMMU).value();
  // The group file is still held by |device|; a cdev open is refused either way.
  EXPECT_EQ(OpenDeviceCdev(group_, space).error().code, EBUSY);
}

TEST_F(VfioModelTest, DmaBeforeOpenIsEinval) {
  std::array<std::byte, 4> buffer{};
  EXPECT_EQ(vendor().dma().DmaRead(kIova, buffer).error().code, EINVAL);
  EXPECT_EQ(vendor().dma().DmaWrite(kIova, buffer).error().code, EINVAL);
  EXPECT_EQ(vendor().PinAndHold(kIova, 1, kProtRead).error().code, EINVAL);
}

TEST_F(VfioModelTest, PinWithoutUnmapListenerIsEinval) {
  TestParentDriver::Options options{.parent_name = "no_listener", .has_listener = false};
  auto parent = std::make_shared<TestParentDriver>(options);
  ASSERT_TRUE(registry_.RegisterParent(parent).has_value());
  ASSERT_TRUE(registry_.CreateMdev("no_listener", "test-a", kUuid2).has_value());
  auto file = registry_.FindGroupOf(kUuid2).value()->Open().value();
  auto container = registry_.CreateContainer();
  ASSERT_TRUE(file->SetContainer(container).has_value());
  ASSERT_TRUE(container->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
  ASSERT_TRUE(container->iommu()->Map({.iova = kIova, .size = kPageSize, .prot = kProtRead,
                                       .fd = {}, .offset = 0}).has_value());
  auto device = file->GetDeviceFd(kUuid2.ToString()).value();
  EXPECT_EQ(parent->device(kUuid2)->PinAndHold(kIova, 1, kProtRead).error().code, EINVAL);
}

TEST_F(VfioModelTest, UnmapAsksTheVendorToUnpin) {
  auto file = OpenInContainer();
  ASSERT_TRUE(iommu().Map({.iova = kIova, .size = 2 * kPageSize, .prot = kProtRead,
                           .fd = {}, .offset = 0}).has_value());
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();
  ASSERT_TRUE(vendor().PinAndHold(kIova, 2, kProtRead).has_value());
  EXPECT_EQ(iommu().pinned_pages(), 2u);
  EXPECT_EQ(iommu().Unmap(kIova, 2 * kPageSize).value(), 2 * kPageSize);
  EXPECT_EQ(parent_->counters()->unmap_calls, 1);
  EXPECT_EQ(vendor().held_pins(), 0u);
  EXPECT_EQ(iommu().pinned_pages(), 0u);
}

TEST_F(VfioModelTest, VendorKeepingPinsIsMarkedBrokenUntilReset) {
  auto file = OpenInContainer();
  ASSERT_TRUE(iommu().Map({.iova = kIova, .size = kPageSize, .prot = kProtRead,
                           .fd = {}, .offset = 0}).has_value());
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();
  ASSERT_TRUE(vendor().PinAndHold(kIova, 1, kProtRead).has_value());
  vendor().set_refuse_unpin(true);
  ASSERT_TRUE(iommu().Unmap(kIova, kPageSize).has_value());
  EXPECT_TRUE(group_->device()->is_broken());
  EXPECT_TRUE(registry_.FindMdev(kUuid1).value().broken);  // What `list` reports.
  EXPECT_EQ(device->GetInfo().error().code, EIO);
  ASSERT_TRUE(device->Reset().has_value());
  EXPECT_FALSE(group_->device()->is_broken());
  EXPECT_FALSE(registry_.FindMdev(kUuid1).value().broken);
  EXPECT_TRUE(device->GetInfo().has_value());
}

TEST_F(VfioModelTest, CloseReleasesPinsTheVendorForgot) {
  auto file = OpenInContainer();
  ASSERT_TRUE(iommu().Map({.iova = kIova, .size = kPageSize, .prot = kProtRead,
                           .fd = {}, .offset = 0}).has_value());
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();
  ASSERT_TRUE(group_->device()->PinPages(kIova, 1, kProtRead).has_value());
  device.reset();
  EXPECT_EQ(iommu().pinned_pages(), 0u);
}

TEST_F(VfioModelTest, RemovalOfAnOpenDeviceAsksAndWaitsForTheUser) {
  auto file = OpenInContainer();
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();
  std::thread user;
  vendor().set_on_request([&] {
    if (!user.joinable()) user = std::thread([&] { device.reset(); });
  });
  ASSERT_TRUE(registry_.RemoveMdev(kUuid1).has_value());
  user.join();
  EXPECT_GE(parent_->counters()->requests, 1);
  EXPECT_EQ(parent_->counters()->closes, 1);
  EXPECT_EQ(parent_->counters()->removed, 1);
}

TEST_F(VfioModelTest, UserThatNeverReleasesIsRevokedAfterTheBound) {
  auto file = OpenInContainer();
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(registry_.RemoveMdev(kUuid1).has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - start, 200ms);
  EXPECT_GE(parent_->counters()->requests, 2);
  EXPECT_EQ(parent_->counters()->closes, 1);  // Closed on the user's behalf.
  EXPECT_EQ(parent_->counters()->removed, 1);
  EXPECT_EQ(device->GetInfo().error().code, ENODEV);
  std::array<std::byte, 1> byte{};
  EXPECT_EQ(device->RegionRead(VFIO_PCI_CONFIG_REGION_INDEX, 0, byte).error().code, ENODEV);
  device.reset();  // A stale handle closes as a no-op.
  EXPECT_EQ(parent_->counters()->closes, 1);
  EXPECT_EQ(container_->group_count(), 1u);  // The group file still holds it.
}

TEST_F(VfioModelTest, GroupOfADeviceBeingRemovedCannotBeOpened) {
  auto file = OpenInContainer();
  auto device = file->GetDeviceFd(kUuid1.ToString()).value();
  std::promise<int> open_errno;
  vendor().set_on_request([&, asked = false]() mutable {
    if (asked) return;
    asked = true;
    file.reset();
    device.reset();  // Releases the group file too.
    open_errno.set_value(group_->Open().error().code);
  });
  ASSERT_TRUE(registry_.RemoveMdev(kUuid1).has_value());
  EXPECT_EQ(open_errno.get_future().get(), ENODEV);
}

TEST(ValidateIrqSetTest, CountZeroOnlyDisablesTriggers) {
  const IrqInfo info{VFIO_IRQ_INFO_EVENTFD, 4};
  IrqSet disable{.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER};
  EXPECT_TRUE(ValidateIrqSet(info, disable).has_value());
  IrqSet mask_none{.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK};
  EXPECT_EQ(ValidateIrqSet(info, mask_none).error().code, EINVAL);
}

TEST(ValidateIrqSetTest, DataTypeAndActionMustBeSingle) {
  const IrqInfo info{VFIO_IRQ_INFO_EVENTFD, 4};
  IrqSet two_data{.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL |
                           VFIO_IRQ_SET_ACTION_TRIGGER, .count = 1};
  EXPECT_EQ(ValidateIrqSet(info, two_data).error().code, EINVAL);
  IrqSet no_action{.flags = VFIO_IRQ_SET_DATA_NONE, .count = 1};
  EXPECT_EQ(ValidateIrqSet(info, no_action).error().code, EINVAL);
  IrqSet unknown{.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER | (1u << 9),
                 .count = 1};
  EXPECT_EQ(ValidateIrqSet(info, unknown).error().code, EINVAL);
}

TEST(ValidateIrqSetTest, DataMustMatchCountAndRange) {
  const IrqInfo info{VFIO_IRQ_INFO_EVENTFD, 4};
  IrqSet bools{.flags = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER, .start = 2,
               .count = 2, .bools = {1, 0}};
  EXPECT_TRUE(ValidateIrqSet(info, bools).has_value());
  bools.bools.pop_back();
  EXPECT_EQ(ValidateIrqSet(info, bools).error().code, EINVAL);
  IrqSet past_end{.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, .start = 3,
                  .count = 2};
  EXPECT_EQ(ValidateIrqSet(info, past_end).error().code, EINVAL);
  IrqSet fds{.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, .count = 1};
  fds.fds.emplace_back();
  EXPECT_TRUE(ValidateIrqSet(info, fds).has_value());
  EXPECT_EQ(ValidateIrqSet(IrqInfo{0, 4}, fds).error().code, EINVAL);
}

}  // namespace
}  // namespace umdev
