// The type1 backend behind the core's Container API, as a VM uses it: a vendor
// device pins and copies guest memory through DmaAccess, and the user's unmap
// makes it let go.
#include <gtest/gtest.h>
#include <linux/vfio.h>

#include "fakes/test_parent.h"
#include "type1_test_util.h"
#include "umdev/mdev_core/registry.h"
#include "umdev/pinning/type1_driver.h"

namespace umdev::pinning::testing {
namespace {

using ::umdev::testing::TestParentDriver;

const Uuid kUuid = Uuid::Parse("11111111-1111-4111-8111-111111111111").value();
constexpr uint64_t kGuestIova = 0x40000000;

class ContainerType1Test : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_.iommu_drivers()
                    .Register(std::make_shared<Type1Driver>(account_))
                    .has_value());
    ASSERT_TRUE(registry_.RegisterParent(parent_).has_value());
    ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid).has_value());
    group_file_ = registry_.FindGroupOf(kUuid).value()->Open().value();
    container_ = registry_.CreateContainer();
    ASSERT_TRUE(group_file_->SetContainer(container_).has_value());
    ASSERT_TRUE(container_->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
    ASSERT_TRUE(container_->iommu()->Map(memory_.Request(kGuestIova, 4 * kPageSize)).has_value());
    device_ = group_file_->GetDeviceFd(kUuid.ToString()).value();
  }

  umdev::testing::TestDevice& vendor() { return *parent_->device(kUuid); }

  std::shared_ptr<LockedMemoryAccount> account_ = std::make_shared<LockedMemoryAccount>(1u << 30);
  Registry registry_;
  std::shared_ptr<TestParentDriver> parent_ =
      std::make_shared<TestParentDriver>(TestParentDriver::Options{});
  GuestMemory memory_{4};
  std::shared_ptr<GroupFile> group_file_;
  std::shared_ptr<Container> container_;
  std::unique_ptr<DeviceFile> device_;
};

TEST_F(ContainerType1Test, VendorDmaReachesGuestMemory) {
  const std::array<std::byte, 3> data = {std::byte{7}, std::byte{8}, std::byte{9}};
  ASSERT_TRUE(vendor().dma().DmaWrite(kGuestIova + kPageSize + 5, data).has_value());
  EXPECT_EQ(memory_.ReadByte(kPageSize + 6), std::byte{8});
  std::array<std::byte, 3> back{};
  ASSERT_TRUE(vendor().dma().DmaRead(kGuestIova + kPageSize + 5, back).has_value());
  EXPECT_EQ(back, data);
}

TEST_F(ContainerType1Test, UnmapMakesTheVendorUnpinAndAccountingReturnsToZero) {
  ASSERT_TRUE(vendor().PinAndHold(kGuestIova, 2, kProtRead | kProtWrite).has_value());
  EXPECT_EQ(account_->used(), 2 * kPageSize);
  EXPECT_EQ(container_->iommu()->Unmap(kGuestIova, 4 * kPageSize).value(), 4 * kPageSize);
  EXPECT_EQ(parent_->counters()->unmap_calls, 1);
  EXPECT_EQ(vendor().held_pins(), 0u);
  EXPECT_EQ(account_->used(), 0u);
  EXPECT_FALSE(registry_.FindGroupOf(kUuid).value()->device()->is_broken());
}

TEST_F(ContainerType1Test, ClosingTheDeviceReleasesItsPins) {
  ASSERT_TRUE(vendor().PinAndHold(kGuestIova, 1, kProtRead).has_value());
  device_.reset();
  EXPECT_EQ(account_->used(), 0u);
}

TEST_F(ContainerType1Test, LastGroupLeavingUnmapsEverything) {
  device_.reset();
  ASSERT_TRUE(group_file_->UnsetContainer().has_value());
  EXPECT_EQ(container_->iommu(), nullptr);
  EXPECT_EQ(account_->used(), 0u);
}

TEST_F(ContainerType1Test, RemovingAnOpenPinningDeviceLeavesNoPins) {
  ASSERT_TRUE(vendor().PinAndHold(kGuestIova, 2, kProtRead).has_value());
  vendor().set_on_request([this] { device_.reset(); });
  ASSERT_TRUE(registry_.RemoveMdev(kUuid).has_value());
  EXPECT_EQ(account_->used(), 0u);
}

}  // namespace
}  // namespace umdev::pinning::testing
