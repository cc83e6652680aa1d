// KvmVfioFile: KVM's hold on a group file as the external user (the group
// stays in its container across device close and reopen), the VM it records
// for the first open, and device removal while it holds the group.
#include <gtest/gtest.h>
#include <linux/vfio.h>

#include "fakes/fake_iommu.h"
#include "fakes/test_parent.h"
#include "umdev/kvm/client_vm.h"
#include "umdev/kvm/vfio_file.h"
#include "umdev/mdev_core/registry.h"

namespace umdev::kvm {
namespace {

using ::umdev::testing::FakeIommuDriver;
using ::umdev::testing::TestParentDriver;
using namespace std::chrono_literals;

const Uuid kUuid = Uuid::Parse("11111111-1111-4111-8111-111111111111").value();

class KvmVfioFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_.iommu_drivers().Register(iommu_driver_).has_value());
    ASSERT_TRUE(registry_.RegisterParent(parent_).has_value());
    ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid).has_value());
    group_ = registry_.FindGroupOf(kUuid).value();
    file_ = group_->Open().value();
    container_ = registry_.CreateContainer();
    ASSERT_TRUE(file_->SetContainer(container_).has_value());
    ASSERT_TRUE(container_->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
  }

  Registry registry_{RegistryOptions{.removal_bound = 200ms, .request_interval = 20ms}};
  std::shared_ptr<FakeIommuDriver> iommu_driver_ = std::make_shared<FakeIommuDriver>();
  std::shared_ptr<TestParentDriver> parent_ =
      std::make_shared<TestParentDriver>(TestParentDriver::Options{});
  std::shared_ptr<Group> group_;
  std::shared_ptr<GroupFile> file_;
  std::shared_ptr<Container> container_;
  std::shared_ptr<const Vm> vm_ = ClientVm::IdentifyProcess(::getpid());
};

TEST_F(KvmVfioFileTest, AddingAFileOutsideAContainerIsEinval) {
  ASSERT_TRUE(file_->UnsetContainer().has_value());
  EXPECT_EQ(KvmVfioFile::Add(file_, vm_).error().code, EINVAL);
  EXPECT_EQ(file_->vm(), nullptr);
}

TEST_F(KvmVfioFileTest, TheHoldKeepsTheGroupInItsContainerAcrossDeviceCloseAndReopen) {
  auto hold = KvmVfioFile::Add(file_, vm_);
  ASSERT_TRUE(hold.has_value()) << hold.error().Describe();
  EXPECT_EQ((*hold)->external_user().iommu_group_id(), group_->id());
  EXPECT_TRUE((*hold)->external_user().MatchesFile(*file_));
  EXPECT_EQ(file_->vm(), vm_);
  auto device = file_->GetDeviceFd(kUuid.ToString()).value();
  EXPECT_EQ(group_->device()->vm(), vm_);
  device.reset();
  // The device closed; the external user still holds the group.
  EXPECT_EQ(group_->container(), container_);
  EXPECT_NE(container_->iommu(), nullptr);
  EXPECT_EQ(file_->UnsetContainer().error().code, EBUSY);
  auto reopened = file_->GetDeviceFd(kUuid.ToString());
  ASSERT_TRUE(reopened.has_value()) << reopened.error().Describe();
  EXPECT_EQ(group_->device()->vm(), vm_);
  EXPECT_EQ(parent_->counters()->opens, 2);
  reopened->reset();
  // FILE_DEL: the VM is forgotten and the group may leave its container.
  hold->reset();
  EXPECT_EQ(file_->vm(), nullptr);
  EXPECT_TRUE(file_->UnsetContainer().has_value());
  EXPECT_EQ(container_->iommu(), nullptr);
}

TEST_F(KvmVfioFileTest, ReleasingTheHoldWhileOpenLeavesTheLatchedVmUntilTheLastClose) {
  auto hold = KvmVfioFile::Add(file_, vm_).value();
  auto device = file_->GetDeviceFd(kUuid.ToString()).value();
  hold.reset();
  EXPECT_EQ(group_->device()->vm(), vm_);
  EXPECT_EQ(group_->container(), container_);  // The open device is a user too.
  device.reset();
  EXPECT_EQ(group_->device()->vm(), nullptr);
}

TEST_F(KvmVfioFileTest, RemovalWhileHeldAsksThenRevokesAndTheHoldStillLetsGo) {
  auto hold = KvmVfioFile::Add(file_, vm_).value();
  auto device = file_->GetDeviceFd(kUuid.ToString()).value();
  ASSERT_TRUE(registry_.RemoveMdev(kUuid).has_value());
  EXPECT_GT(parent_->counters()->requests, 0);  // Asked first (the REQ interrupt)...
  EXPECT_EQ(device->GetInfo().error().code, ENODEV);  // ...then revoked.
  EXPECT_EQ(parent_->counters()->removed, 1);
  EXPECT_EQ(registry_.FindMdev(kUuid).error().code, ENODEV);
  device.reset();
  hold.reset();
  file_.reset();
  EXPECT_EQ(container_->group_count(), 0u);
}

}  // namespace
}  // namespace umdev::kvm
