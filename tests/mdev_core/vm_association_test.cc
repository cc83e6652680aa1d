// The kernel's kvm association contract in the core: the VM set on the group
// (or cdev) file before open is latched by the first open and released at
// the last close; the type's VM policy and the instance's bound_vm_uuid.
#include <gtest/gtest.h>
#include <linux/vfio.h>

#include "fakes/fake_iommu.h"
#include "fakes/test_parent.h"
#include "umdev/mdev_core/registry.h"
#include "umdev/mdev_core/vm.h"

namespace umdev {
namespace {

using ::umdev::testing::FakeIommuDriver;
using ::umdev::testing::TestParentDriver;
using namespace std::chrono_literals;

using testing::kUuid1;
using testing::kUuid2;
constexpr const char* kVmUuidA = "aaaaaaaa-0000-4000-8000-00000000000a";
constexpr const char* kVmUuidB = "bbbbbbbb-0000-4000-8000-00000000000b";

// A VM known by a key: two FakeVms with one key are the same VM.
class FakeVm final : public Vm {
 public:
  FakeVm(int key, VmIdentity identity) : key_(key), identity_(std::move(identity)) {}
  const VmIdentity& identity() const override { return identity_; }
  bool SameVm(const Vm& other) const override {
    const auto* fake = dynamic_cast<const FakeVm*>(&other);
    return fake != nullptr && fake->key_ == key_;
  }

 private:
  int key_;
  VmIdentity identity_;
};

std::shared_ptr<const Vm> MakeVm(int key, std::string uuid = "", std::string accel = "kvm") {
  return std::make_shared<FakeVm>(
      key, VmIdentity{.uuid = std::move(uuid), .name = "vm" + std::to_string(key),
                      .pid = 1000 + key, .accel = std::move(accel), .cgroup = "/machine"});
}

class VmAssociationTest : public ::testing::Test {
 protected:
  void Register(VmPolicy policy) {
    auto options = TestParentDriver::Options{};
    options.types = {{"a", "Type A", "", policy}, {"b", "", "", policy}};
    parent_ = std::make_shared<TestParentDriver>(options);
    ASSERT_TRUE(registry_.iommu_drivers().Register(iommu_driver_).has_value());
    ASSERT_TRUE(registry_.RegisterParent(parent_).has_value());
    ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", kUuid1).has_value());
    ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-b", kUuid2).has_value());
  }

  // The group path: the group file in a container of its own, with |vm| set.
  struct Opened {
    std::shared_ptr<GroupFile> file;
    std::shared_ptr<Container> container;
  };
  Opened OpenGroup(const Uuid& uuid, std::shared_ptr<const Vm> vm) {
    Opened opened;
    opened.file = registry_.FindGroupOf(uuid).value()->Open().value();
    opened.container = registry_.CreateContainer();
    EXPECT_TRUE(opened.file->SetContainer(opened.container).has_value());
    EXPECT_TRUE(opened.container->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
    opened.file->SetVm(std::move(vm));
    return opened;
  }
  Result<std::unique_ptr<DeviceFile>> OpenDevice(Opened& opened, const Uuid& uuid) {
    return opened.file->GetDeviceFd(uuid.ToString());
  }
  std::string Attr(const Uuid& uuid, std::string_view name) {
    auto value = registry_.ReadMdevAttribute(uuid, name);
    EXPECT_TRUE(value.has_value()) << value.error().Describe();
    return value.value_or("?");
  }

  Registry registry_{RegistryOptions{.removal_bound = 200ms, .request_interval = 20ms}};
  std::shared_ptr<FakeIommuDriver> iommu_driver_ = std::make_shared<FakeIommuDriver>();
  std::shared_ptr<TestParentDriver> parent_;
};

TEST_F(VmAssociationTest, FirstOpenLatchesTheVmAndTheVendorReceivesIt) {
  Register({});
  auto vm = MakeVm(1, kVmUuidA);
  Opened group = OpenGroup(kUuid1, vm);
  auto device = OpenDevice(group, kUuid1);
  ASSERT_TRUE(device.has_value()) << device.error().Describe();
  EXPECT_EQ(parent_->device(kUuid1)->opened_vm(), vm);
  EXPECT_EQ(registry_.FindMdev(kUuid1)->vm->name, "vm1");
  EXPECT_EQ(Attr(kUuid1, "vm_uuid"), kVmUuidA);
  EXPECT_EQ(Attr(kUuid1, "vm_name"), "vm1");
  EXPECT_EQ(Attr(kUuid1, "vm_pid"), "1001");
  EXPECT_EQ(Attr(kUuid1, "vm_accel"), "kvm");
}

TEST_F(VmAssociationTest, AttributesAreEmptyWhileClosedAndAfterTheLastClose) {
  Register({});
  EXPECT_EQ(Attr(kUuid1, "vm_uuid"), "");
  EXPECT_EQ(Attr(kUuid1, "vm_pid"), "");
  EXPECT_EQ(Attr(kUuid1, "vm_accel"), "");
  Opened group = OpenGroup(kUuid1, MakeVm(1));
  auto device = OpenDevice(group, kUuid1).value();
  EXPECT_EQ(Attr(kUuid1, "vm_accel"), "kvm");
  device.reset();
  EXPECT_EQ(Attr(kUuid1, "vm_accel"), "");
  EXPECT_FALSE(registry_.FindMdev(kUuid1)->vm.has_value());
}

TEST_F(VmAssociationTest, AChangeAfterOpenDoesNotReachTheOpenDevice) {
  Register({});
  auto first = MakeVm(1);
  auto second = MakeVm(2);
  Opened group = OpenGroup(kUuid1, first);
  auto device = OpenDevice(group, kUuid1).value();
  group.file->SetVm(second);  // KVM_DEV_VFIO_FILE_ADD of another VM, after open.
  EXPECT_EQ(registry_.FindGroupOf(kUuid1).value()->device()->vm(), first);
  // A second device fd of the same open device keeps the latched VM too.
  auto again = OpenDevice(group, kUuid1).value();
  EXPECT_EQ(Attr(kUuid1, "vm_name"), "vm1");
  again.reset();
  device.reset();
  // The next first open latches what the file holds now.
  auto reopened = OpenDevice(group, kUuid1).value();
  EXPECT_EQ(Attr(kUuid1, "vm_name"), "vm2");
  EXPECT_EQ(parent_->device(kUuid1)->opened_vm(), second);
}

TEST_F(VmAssociationTest, ClearingTheVmBeforeOpenOpensWithout) {
  Register({});
  Opened group = OpenGroup(kUuid1, MakeVm(1));
  group.file->SetVm(nullptr);  // FILE_DEL before the open.
  auto device = OpenDevice(group, kUuid1).value();
  EXPECT_EQ(parent_->device(kUuid1)->opened_vm(), nullptr);
  EXPECT_EQ(Attr(kUuid1, "vm_accel"), "");
}

TEST_F(VmAssociationTest, CdevOpenLatchesTheVmGivenForTheDeviceFile) {
  Register({});
  auto space = AddressSpace::Create(registry_.iommu_drivers(), VFIO_TYPE1v2_IOMMU).value();
  auto vm = MakeVm(3);
  auto device = OpenDeviceCdev(registry_.FindGroupOf(kUuid1).value(), space, vm);
  ASSERT_TRUE(device.has_value());
  EXPECT_EQ(parent_->device(kUuid1)->opened_vm(), vm);
}

TEST_F(VmAssociationTest, RequiresVmRefusesAnOpenWithoutOneWithEsrch) {
  Register({.requires_vm = true});
  Opened group = OpenGroup(kUuid1, nullptr);
  auto refused = OpenDevice(group, kUuid1);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ESRCH);
  EXPECT_NE(refused.error().Describe().find("requires a VM"), std::string::npos);
  EXPECT_EQ(parent_->counters()->opens, 0);
  EXPECT_FALSE(registry_.FindGroupOf(kUuid1).value()->device()->is_open());
}

TEST_F(VmAssociationTest, RequiresVmRefusesAProcessThatIsNotAVm) {
  Register({.requires_vm = true});
  Opened group = OpenGroup(kUuid1, MakeVm(1, "", "none"));
  EXPECT_EQ(OpenDevice(group, kUuid1).error().code, ESRCH);
  group.file->SetVm(MakeVm(1, "", "qtest"));
  EXPECT_TRUE(OpenDevice(group, kUuid1).has_value());
}

TEST_F(VmAssociationTest, OnePerVmRefusesASecondInstanceOfTheParentWithEexist) {
  Register({.one_per_vm = true});
  Opened first = OpenGroup(kUuid1, MakeVm(1));
  auto device = OpenDevice(first, kUuid1).value();
  Opened second = OpenGroup(kUuid2, MakeVm(1));  // Another reference to the same VM.
  auto refused = OpenDevice(second, kUuid2);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, EEXIST);
  EXPECT_NE(refused.error().Describe().find(kUuid1.ToString()), std::string::npos);
  // Another VM may; and the same VM may once the first instance is closed.
  second.file->SetVm(MakeVm(2));
  auto other = OpenDevice(second, kUuid2);
  ASSERT_TRUE(other.has_value());
  other->reset();
  second.file->SetVm(MakeVm(1));
  device.reset();
  EXPECT_TRUE(OpenDevice(second, kUuid2).has_value());
}

TEST_F(VmAssociationTest, OnePerVmLetsClientsWithoutAVmOpenSeveral) {
  Register({.one_per_vm = true});
  Opened first = OpenGroup(kUuid1, nullptr);
  Opened second = OpenGroup(kUuid2, nullptr);
  auto a = OpenDevice(first, kUuid1);
  auto b = OpenDevice(second, kUuid2);
  EXPECT_TRUE(a.has_value());
  EXPECT_TRUE(b.has_value());
}

TEST_F(VmAssociationTest, BoundVmUuidAdmitsOnlyThatVm) {
  Register({});
  ASSERT_TRUE(registry_.WriteMdevAttribute(kUuid1, "bound_vm_uuid",
                                           "AAAAAAAA-0000-4000-8000-00000000000A\n"));
  EXPECT_EQ(Attr(kUuid1, "bound_vm_uuid"), kVmUuidA);  // Canonical form.
  Opened group = OpenGroup(kUuid1, MakeVm(2, kVmUuidB));
  auto refused = OpenDevice(group, kUuid1);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, EPERM);
  EXPECT_NE(refused.error().Describe().find(kVmUuidA), std::string::npos);
  group.file->SetVm(nullptr);
  EXPECT_EQ(OpenDevice(group, kUuid1).error().code, EPERM);
  group.file->SetVm(MakeVm(3, ""));
  EXPECT_EQ(OpenDevice(group, kUuid1).error().code, EPERM);
  group.file->SetVm(MakeVm(1, kVmUuidA));
  auto admitted = OpenDevice(group, kUuid1);
  ASSERT_TRUE(admitted.has_value()) << admitted.error().Describe();
  // Rebinding while open is kept for the next first open.
  ASSERT_TRUE(registry_.WriteMdevAttribute(kUuid1, "bound_vm_uuid", kVmUuidB));
  EXPECT_EQ(Attr(kUuid1, "vm_uuid"), kVmUuidA);
  admitted->reset();
  EXPECT_EQ(OpenDevice(group, kUuid1).error().code, EPERM);
  ASSERT_TRUE(registry_.WriteMdevAttribute(kUuid1, "bound_vm_uuid", ""));
  EXPECT_TRUE(OpenDevice(group, kUuid1).has_value());
}

TEST_F(VmAssociationTest, BoundVmUuidRefusesTextThatIsNotAUuid) {
  Register({});
  EXPECT_EQ(registry_.WriteMdevAttribute(kUuid1, "bound_vm_uuid", "vm-1").error().code, EINVAL);
  EXPECT_EQ(Attr(kUuid1, "bound_vm_uuid"), "");
}

TEST_F(VmAssociationTest, VmAttributesAreListedReadOnlyBeforeTheVendors) {
  Register({});
  auto attributes = registry_.MdevAttributes(kUuid1).value();
  ASSERT_GE(attributes.size(), 5u);
  const std::vector<std::string> names = {"vm_uuid", "vm_name", "vm_pid", "vm_accel",
                                          "bound_vm_uuid"};
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(attributes[i].name, names[i]);
    EXPECT_TRUE(attributes[i].readable);
    EXPECT_EQ(attributes[i].writable, names[i] == "bound_vm_uuid");
  }
  for (const char* name : {"vm_uuid", "vm_name", "vm_pid", "vm_accel"}) {
    EXPECT_EQ(registry_.WriteMdevAttribute(kUuid1, name, "x").error().code, EACCES) << name;
  }
}

TEST_F(VmAssociationTest, ARemovedDeviceAnswersItsVmAttributesWithEnodev) {
  Register({});
  ASSERT_TRUE(registry_.RemoveMdev(kUuid1));
  EXPECT_EQ(registry_.ReadMdevAttribute(kUuid1, "vm_uuid").error().code, ENODEV);
}

TEST_F(VmAssociationTest, AFailedVendorOpenReleasesTheClaim) {
  Register({.one_per_vm = true});
  auto vm = MakeVm(1);
  Opened first = OpenGroup(kUuid1, vm);
  auto device = OpenDevice(first, kUuid1).value();
  // Removal revokes the open device; its claim must go with its close.
  ASSERT_TRUE(registry_.RemoveMdev(kUuid1));
  Opened second = OpenGroup(kUuid2, vm);
  EXPECT_TRUE(OpenDevice(second, kUuid2).has_value());
}

}  // namespace
}  // namespace umdev
