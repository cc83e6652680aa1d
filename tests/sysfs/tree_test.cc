// Tree: every node of the mdev sysfs layout and every errno of its writes,
// without FUSE.
#include "umdev/sysfs/tree.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fakes/test_parent.h"

namespace umdev::sysfs {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::umdev::testing::TestParentDriver;
using namespace std::chrono_literals;

constexpr std::string_view kUuid = "11111111-1111-4111-8111-111111111111";
constexpr std::string_view kUuid2 = "22222222-2222-4222-8222-222222222222";
constexpr std::string_view kTypeA = "class/mdev_bus/test_parent/mdev_supported_types/test-a";
constexpr std::string_view kTypeB = "class/mdev_bus/test_parent/mdev_supported_types/test-b";
constexpr std::string_view kParentDir = "devices/virtual/umdev/test_parent";

std::string Cat(std::string_view a, std::string_view b) { return std::string(a) + "/" + std::string(b); }

class TreeTest : public ::testing::Test {
 protected:
  TreeTest() {
    TestParentDriver::Options options;
    options.features.attributes = true;
    options.parent_attributes = {{"memory_free", "4096"}};
    parent_ = std::make_shared<TestParentDriver>(options);
    EXPECT_TRUE(registry_.RegisterParent(parent_).has_value());
  }

  // Writes |uuid| to type A's create; the instance's directory.
  std::string Create(std::string_view uuid = kUuid) {
    EXPECT_TRUE(tree_.Write(Cat(kTypeA, "create"), std::string(uuid) + "\n").has_value());
    return Cat(kParentDir, uuid);
  }

  int WriteErrno(std::string_view path, std::string_view data) {
    auto result = tree_.Write(path, data);
    return result.has_value() ? 0 : result.error().code;
  }

  Registry registry_{RegistryOptions{.removal_bound = 300ms, .request_interval = 20ms}};
  std::shared_ptr<TestParentDriver> parent_;
  Tree tree_{registry_, TreeOptions{.socket_path = [](std::string_view name) {
               return "/run/umdev/vfio-user/" + std::string(name) + ".sock";
             }}};
};

TEST_F(TreeTest, RootHoldsTheSysfsTopDirectories) {
  EXPECT_THAT(*tree_.List(""), ElementsAre("bus", "class", "devices", "kernel"));
  EXPECT_THAT(*tree_.List("/"), ElementsAre("bus", "class", "devices", "kernel"));
  EXPECT_THAT(*tree_.List("class"), ElementsAre("mdev_bus"));
  EXPECT_THAT(*tree_.List("bus/mdev"), ElementsAre("devices", "drivers"));
  EXPECT_THAT(*tree_.List("kernel"), ElementsAre("iommu_groups"));
  EXPECT_THAT(*tree_.List("devices/virtual/umdev"), ElementsAre("test_parent"));
  const NodeInfo root = *tree_.Stat("");
  EXPECT_EQ(root.kind, NodeKind::kDirectory);
  EXPECT_EQ(root.mode, 0755u);
}

// A bus driver's function (passthrough) appears where the kernel puts a
// vfio-pci device; with none there is no bus/pci at all.
TEST_F(TreeTest, ABusDevicesFunctionIsShownTheKernelsWay) {
  EXPECT_THAT(*tree_.List("bus"), ElementsAre("mdev"));
  BusDeviceSpec spec;
  spec.name = "0000:01:00.0";
  spec.driver = "passthrough";
  spec.iommu_group = 40;
  spec.probe = [](Device& device) -> Result<std::unique_ptr<DeviceOps>> {
    return std::make_unique<umdev::testing::TestDevice>(
        device, std::make_shared<umdev::testing::TestDevice::Counters>(), true, false, [] {});
  };
  ASSERT_TRUE(registry_.RegisterDevice(std::move(spec)).has_value());
  EXPECT_THAT(*tree_.List("bus"), ElementsAre("mdev", "pci"));
  EXPECT_THAT(*tree_.List("bus/pci/devices"), ElementsAre("0000:01:00.0"));
  EXPECT_EQ(*tree_.ReadLink("bus/pci/devices/0000:01:00.0"),
            "../../../devices/pci0000:00/0000:01:00.0");
  EXPECT_THAT(*tree_.List("bus/pci/drivers/vfio-pci"), ElementsAre("0000:01:00.0"));
  const std::string dir = "bus/pci/devices/0000:01:00.0";
  EXPECT_THAT(*tree_.List(dir), ElementsAre("driver", "iommu_group", "subsystem", "umdev_driver",
                                            "vfio-dev", "vfio_user_socket"));
  EXPECT_EQ(*tree_.ReadLink(Cat(dir, "iommu_group")), "../../../kernel/iommu_groups/40");
  EXPECT_EQ(*tree_.Read(Cat(dir, "vfio_user_socket")), "/run/umdev/vfio-user/0000:01:00.0.sock\n");
  EXPECT_EQ(*tree_.Read(Cat(dir, "umdev_driver")), "passthrough\n");
  EXPECT_THAT(*tree_.List(Cat(dir, "vfio-dev")), ElementsAre("vfio0"));
  EXPECT_THAT(*tree_.List("kernel/iommu_groups/40/devices"), ElementsAre("0000:01:00.0"));
  // Through the group's link, the same directory.
  EXPECT_EQ(*tree_.Read("kernel/iommu_groups/40/devices/0000:01:00.0/umdev_driver"),
            "passthrough\n");
  EXPECT_EQ(tree_.List("bus/pci/devices/0000:02:00.0").error().code, ENOENT);
  ASSERT_TRUE(registry_.UnregisterDevice("0000:01:00.0").has_value());
  EXPECT_THAT(*tree_.List("bus"), ElementsAre("mdev"));
}

TEST_F(TreeTest, CompatClassLinksEachParentToItsDeviceDirectory) {
  EXPECT_THAT(*tree_.List("class/mdev_bus"), ElementsAre("test_parent"));
  const NodeInfo link = *tree_.Stat("class/mdev_bus/test_parent");
  EXPECT_EQ(link.kind, NodeKind::kSymlink);
  EXPECT_EQ(link.mode, 0777u);
  EXPECT_EQ(*tree_.ReadLink("class/mdev_bus/test_parent"), "../../devices/virtual/umdev/test_parent");
  EXPECT_EQ(*tree_.Resolve("class/mdev_bus/test_parent"), kParentDir);
  EXPECT_THAT(*tree_.List(kParentDir), ElementsAre("mdev_supported_types", "memory_free"));
}

TEST_F(TreeTest, TypeDirectoriesHoldTheKernelAttributes) {
  EXPECT_THAT(*tree_.List("class/mdev_bus/test_parent/mdev_supported_types"),
              ElementsAre("test-a", "test-b"));
  EXPECT_THAT(*tree_.List(kTypeA), ElementsAre("available_instances", "create", "description",
                                               "device_api", "devices", "name"));
  // No description: the kernel creates no "description" file.
  EXPECT_THAT(*tree_.List(kTypeB),
              ElementsAre("available_instances", "create", "device_api", "devices", "name"));
  EXPECT_EQ(*tree_.Read(Cat(kTypeA, "name")), "Type A\n");
  EXPECT_EQ(*tree_.Read(Cat(kTypeB, "name")), "b\n");  // No pretty name: the sysfs name.
  EXPECT_EQ(*tree_.Read(Cat(kTypeA, "description")), "first test type\n");
  EXPECT_EQ(*tree_.Read(Cat(kTypeA, "device_api")), "vfio-pci\n");
  EXPECT_EQ(*tree_.Read(Cat(kTypeA, "available_instances")), "4\n");
  EXPECT_THAT(*tree_.List(Cat(kTypeA, "devices")), IsEmpty());
}

TEST_F(TreeTest, FileModesAreSysfsModes) {
  const std::string dev = Create();
  const auto mode = [&](const std::string& path) { return tree_.Stat(path)->mode; };
  EXPECT_EQ(mode(Cat(kTypeA, "create")), 0200u);
  EXPECT_EQ(mode(Cat(kTypeA, "name")), 0444u);
  EXPECT_EQ(mode(Cat(kTypeA, "available_instances")), 0444u);
  EXPECT_EQ(mode(Cat(kTypeA, "device_api")), 0444u);
  EXPECT_EQ(mode(Cat(kTypeA, "description")), 0444u);
  EXPECT_EQ(mode(Cat(kTypeA, "devices")), 0755u);
  EXPECT_EQ(mode(Cat(dev, "remove")), 0200u);
  EXPECT_EQ(mode(Cat(dev, "uevent")), 0644u);
  EXPECT_EQ(mode(Cat(dev, "vfio_user_socket")), 0444u);
  EXPECT_EQ(mode(Cat(dev, "label")), 0644u);
  EXPECT_EQ(mode(Cat(dev, "serial")), 0444u);
  EXPECT_EQ(mode(Cat(dev, "secret")), 0200u);
  EXPECT_EQ(mode(Cat(dev, "vendor")), 0755u);
  EXPECT_EQ(tree_.Stat(Cat(dev, "remove"))->kind, NodeKind::kFile);
}

TEST_F(TreeTest, ParentAttributesAreReadOnlyFilesInTheParentsDirectory) {
  EXPECT_EQ(*tree_.Read(Cat(kParentDir, "memory_free")), "4096\n");
  EXPECT_EQ(tree_.Stat(Cat(kParentDir, "memory_free"))->mode, 0444u);
  EXPECT_EQ(WriteErrno(Cat(kParentDir, "memory_free"), "1\n"), EACCES);
}

TEST_F(TreeTest, CreateMakesTheInstanceAppearEverywhere) {
  const std::string dev = Create();
  const std::string uuid(kUuid);
  EXPECT_EQ(registry_.Mdevs().size(), 1u);
  EXPECT_EQ(*tree_.Read(Cat(kTypeA, "available_instances")), "3\n");  // Live.
  EXPECT_THAT(*tree_.List(kParentDir), ElementsAre(uuid, "mdev_supported_types", "memory_free"));
  EXPECT_THAT(*tree_.List(dev),
              ElementsAre("bound_vm_uuid", "busy_poll_us", "driver", "iommu_group", "label",
                          "mdev_type", "remove", "secret", "serial", "subsystem", "uevent",
                          "vendor", "vfio_user_socket", "vm_accel", "vm_name", "vm_pid",
                          "vm_uuid"));
  EXPECT_EQ(tree_.Stat(Cat(dev, "busy_poll_us"))->mode, 0644u);
  EXPECT_EQ(*tree_.Read(Cat(dev, "vm_accel")), "\n");  // Closed: no VM.
  EXPECT_EQ(tree_.Stat(Cat(dev, "vm_accel"))->mode, 0444u);
  EXPECT_EQ(tree_.Stat(Cat(dev, "bound_vm_uuid"))->mode, 0644u);
  // bus/mdev/devices/<uuid>, what mdevctl lists.
  EXPECT_THAT(*tree_.List("bus/mdev/devices"), ElementsAre(uuid));
  EXPECT_EQ(*tree_.ReadLink("bus/mdev/devices/" + uuid), "../../../" + dev);
  EXPECT_EQ(*tree_.Resolve("bus/mdev/devices/" + uuid), dev);
  // The type's devices/ link.
  EXPECT_THAT(*tree_.List(Cat(kTypeA, "devices")), ElementsAre(uuid));
  EXPECT_THAT(*tree_.List(Cat(kTypeB, "devices")), IsEmpty());
  EXPECT_EQ(*tree_.ReadLink(Cat(kTypeA, "devices/" + uuid)), "../../../" + uuid);
  EXPECT_EQ(*tree_.Resolve(Cat(kTypeA, "devices/" + uuid)), dev);
  // mdev_type: mdevctl takes the type from the basename of its target.
  EXPECT_EQ(*tree_.ReadLink(Cat(dev, "mdev_type")), "../mdev_supported_types/test-a");
  EXPECT_EQ(*tree_.Resolve(Cat(dev, "mdev_type")), Cat(kParentDir, "mdev_supported_types/test-a"));
  EXPECT_EQ(*tree_.Read(Cat(dev, "mdev_type/name")), "Type A\n");
  // The emulated IOMMU group, both ways.
  EXPECT_EQ(*tree_.ReadLink(Cat(dev, "iommu_group")), "../../../../../kernel/iommu_groups/0");
  EXPECT_THAT(*tree_.List("kernel/iommu_groups"), ElementsAre("0"));
  EXPECT_THAT(*tree_.List(Cat(dev, "iommu_group/devices")), ElementsAre(uuid));
  EXPECT_EQ(*tree_.Resolve("kernel/iommu_groups/0/devices/" + uuid), dev);
  // The bound driver and the bus.
  EXPECT_EQ(*tree_.Resolve(Cat(dev, "driver")), "bus/mdev/drivers/test");
  EXPECT_THAT(*tree_.List("bus/mdev/drivers"), ElementsAre("test"));
  EXPECT_EQ(*tree_.Resolve("bus/mdev/drivers/test/" + uuid), dev);
  EXPECT_EQ(*tree_.Resolve(Cat(dev, "subsystem")), "bus/mdev");
  EXPECT_EQ(*tree_.Read(Cat(dev, "vfio_user_socket")), "/run/umdev/vfio-user/" + uuid + ".sock\n");
  EXPECT_EQ(*tree_.Read(Cat(dev, "uevent")), "DRIVER=test\n");
}

TEST_F(TreeTest, CreateTakesAUuidWithOrWithoutNewlineInEitherCase) {
  EXPECT_EQ(WriteErrno(Cat(kTypeA, "create"), kUuid), 0);
  EXPECT_EQ(WriteErrno(Cat(kTypeB, "create"), "2222AAAA-2222-4222-8222-222222222222\n"), 0);
  // The instance is named in lowercase, as the kernel's "%pUl".
  EXPECT_TRUE(tree_.Stat("bus/mdev/devices/2222aaaa-2222-4222-8222-222222222222").has_value());
  EXPECT_EQ(tree_.Stat("bus/mdev/devices/2222AAAA-2222-4222-8222-222222222222").error().code, ENOENT);
}

TEST_F(TreeTest, CreateRefusesWhatTheKernelRefuses) {
  const std::string create = Cat(kTypeA, "create");
  EXPECT_EQ(WriteErrno(create, "bad\n"), EINVAL);
  EXPECT_EQ(WriteErrno(create, ""), EINVAL);
  EXPECT_EQ(WriteErrno(create, std::string(kUuid).substr(1)), EINVAL);       // 35 bytes.
  EXPECT_EQ(WriteErrno(create, std::string(kUuid) + "\n\n"), EINVAL);        // 38 bytes.
  EXPECT_EQ(WriteErrno(create, "11111111+1111-4111-8111-111111111111"), EINVAL);
  EXPECT_EQ(WriteErrno(create, "1111111g-1111-4111-8111-111111111111"), EINVAL);
  EXPECT_THAT(registry_.Mdevs(), IsEmpty());
  Create();
  // The UUID is taken under any type (the kernel's global mdev_list).
  EXPECT_EQ(WriteErrno(create, std::string(kUuid) + "\n"), EEXIST);
  EXPECT_EQ(WriteErrno(Cat(kTypeB, "create"), kUuid), EEXIST);
  // The vendor's probe error reaches the writer; nothing of it remains.
  parent_->FailNextProbe(ENOMEM);
  EXPECT_EQ(WriteErrno(create, kUuid2), ENOMEM);
  EXPECT_EQ(registry_.Mdevs().size(), 1u);
}

TEST_F(TreeTest, CreateBeyondTheSharedCounterIsEusers) {
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(WriteErrno(Cat(kTypeA, "create"), Uuid::Generate().ToString()), 0);
  }
  EXPECT_EQ(*tree_.Read(Cat(kTypeB, "available_instances")), "0\n");
  EXPECT_EQ(WriteErrno(Cat(kTypeB, "create"), Uuid::Generate().ToString() + "\n"), EUSERS);
}

TEST_F(TreeTest, CreateOnAFullPerTypeParentIsTheVendorsEnospc) {
  TestParentDriver::Options options;
  options.parent_name = "typed";
  options.driver_name = "typed";
  options.max_instances = 0;
  options.per_type_capacity = 1;
  ASSERT_TRUE(registry_.RegisterParent(std::make_shared<TestParentDriver>(options)).has_value());
  const std::string create = "class/mdev_bus/typed/mdev_supported_types/typed-a/create";
  EXPECT_EQ(*tree_.Read("class/mdev_bus/typed/mdev_supported_types/typed-a/available_instances"),
            "1\n");
  EXPECT_EQ(WriteErrno(create, kUuid), 0);
  EXPECT_EQ(*tree_.Read("class/mdev_bus/typed/mdev_supported_types/typed-a/available_instances"),
            "0\n");
  EXPECT_EQ(WriteErrno(create, kUuid2), ENOSPC);
}

TEST_F(TreeTest, RemoveTakesANonzeroIntegerAndZeroIsANoOp) {
  const std::string dev = Create();
  EXPECT_EQ(WriteErrno(Cat(dev, "remove"), "0\n"), 0);
  EXPECT_EQ(registry_.Mdevs().size(), 1u);
  for (std::string_view bad : {"", "abc", "-1", " 1", "1 ", "1\n\n", "yes", "08", "0x",
                               "99999999999999999999999"}) {
    EXPECT_EQ(WriteErrno(Cat(dev, "remove"), bad), EINVAL) << "'" << bad << "'";
  }
  EXPECT_EQ(registry_.Mdevs().size(), 1u);
  EXPECT_EQ(WriteErrno(Cat(dev, "remove"), "1\n"), 0);
  EXPECT_THAT(registry_.Mdevs(), IsEmpty());
  EXPECT_EQ(tree_.Stat(dev).error().code, ENOENT);
  EXPECT_THAT(*tree_.List("bus/mdev/devices"), IsEmpty());
  EXPECT_EQ(*tree_.Read(Cat(kTypeA, "available_instances")), "4\n");
  // Through the bus link, as mdevctl stop does.
  Create();
  EXPECT_EQ(WriteErrno("bus/mdev/devices/" + std::string(kUuid) + "/remove", "1"), 0);
  EXPECT_THAT(registry_.Mdevs(), IsEmpty());
}

TEST_F(TreeTest, RemoveParsesLikeKstrtoul) {
  EXPECT_EQ(*ParseRemoveWrite("1"), 1u);
  EXPECT_EQ(*ParseRemoveWrite("+7\n"), 7u);
  EXPECT_EQ(*ParseRemoveWrite("0x1f"), 31u);
  EXPECT_EQ(*ParseRemoveWrite("0XfF\n"), 255u);
  EXPECT_EQ(*ParseRemoveWrite("010"), 8u);
  EXPECT_EQ(*ParseRemoveWrite("0"), 0u);
  EXPECT_EQ(*ParseRemoveWrite(std::string_view("1\0junk", 6)), 1u);  // Stops at the NUL.
  EXPECT_EQ(*ParseRemoveWrite("18446744073709551615"), ~0UL);
  EXPECT_EQ(ParseRemoveWrite("18446744073709551616").error().code, EINVAL);
  EXPECT_EQ(ParseRemoveWrite("++1").error().code, EINVAL);
  EXPECT_EQ(ParseRemoveWrite("0xg").error().code, EINVAL);
}

TEST_F(TreeTest, CreateParsesLikeGuidParse) {
  EXPECT_EQ(ParseCreateWrite(std::string(kUuid) + "\n")->ToString(), kUuid);
  // guid_parse() checks 36 characters; create_store() lets a 37th through.
  EXPECT_EQ(ParseCreateWrite(std::string(kUuid) + "x")->ToString(), kUuid);
  EXPECT_EQ(ParseCreateWrite(std::string(kUuid) + "xy").error().code, EINVAL);
}

TEST_F(TreeTest, UeventShowsTheDriverAndTakesOnlyKnownActions) {
  const std::string dev = Create();
  EXPECT_EQ(*tree_.Read(Cat(dev, "uevent")), "DRIVER=test\n");
  EXPECT_EQ(WriteErrno(Cat(dev, "uevent"), "change\n"), 0);
  EXPECT_EQ(WriteErrno(Cat(dev, "uevent"), "add 1234 A=B"), 0);
  EXPECT_EQ(WriteErrno(Cat(dev, "uevent"), "bogus\n"), EINVAL);
  EXPECT_EQ(WriteErrno(Cat(dev, "uevent"), ""), EINVAL);
}

TEST_F(TreeTest, VendorAttributesAreFilesWithTheVendorsErrnos) {
  const std::string dev = Create();
  EXPECT_EQ(*tree_.Read(Cat(dev, "label")), "none\n");
  EXPECT_EQ(WriteErrno(Cat(dev, "label"), "blue\n"), 0);
  EXPECT_EQ(*tree_.Read(Cat(dev, "label")), "blue\n");
  EXPECT_EQ(WriteErrno(Cat(dev, "label"), "bad\n"), EINVAL);
  EXPECT_EQ(*tree_.Read(Cat(dev, "serial")), "TEST-0001\n");
  EXPECT_EQ(WriteErrno(Cat(dev, "serial"), "x"), EACCES);
  EXPECT_EQ(tree_.Read(Cat(dev, "secret")).error().code, EACCES);
  EXPECT_EQ(WriteErrno(Cat(dev, "secret"), "x"), 0);
  // A '/' in a name is a directory, like the kernel's attribute groups.
  EXPECT_THAT(*tree_.List(Cat(dev, "vendor")), ElementsAre("knob"));
  EXPECT_EQ(WriteErrno(Cat(dev, "vendor/knob"), "7\n"), 0);
  EXPECT_EQ(*tree_.Read(Cat(dev, "vendor/knob")), "7\n");
  EXPECT_EQ(*registry_.ReadMdevAttribute(Uuid::Parse(kUuid).value(), "vendor/knob"), "7");
}

TEST_F(TreeTest, NoSocketPathMeansNoVfioUserSocketAttribute) {
  Tree bare(registry_);
  const std::string dev = Create();
  EXPECT_EQ(bare.Stat(Cat(dev, "vfio_user_socket")).error().code, ENOENT);
  EXPECT_TRUE(bare.Stat(Cat(dev, "remove")).has_value());
}

TEST_F(TreeTest, WalkingErrorsAreTheVfsErrnos) {
  const std::string name = Cat(kTypeA, "name");
  EXPECT_EQ(tree_.Stat("nope").error().code, ENOENT);
  EXPECT_EQ(tree_.Stat("class/mdev_bus/nope").error().code, ENOENT);
  EXPECT_EQ(tree_.Stat("bus/mdev/devices/" + std::string(kUuid)).error().code, ENOENT);
  EXPECT_EQ(tree_.Stat(Cat(name, "x")).error().code, ENOTDIR);
  EXPECT_EQ(tree_.Stat(Cat(name, "..")).error().code, ENOTDIR);
  EXPECT_EQ(tree_.List(name).error().code, ENOTDIR);
  EXPECT_EQ(tree_.ReadLink(kTypeA).error().code, EINVAL);
  EXPECT_EQ(tree_.ReadLink(name).error().code, EINVAL);
  EXPECT_EQ(tree_.Read(kTypeA).error().code, EISDIR);
  EXPECT_EQ(WriteErrno(kTypeA, "x"), EISDIR);
  EXPECT_EQ(tree_.Read(Cat(kTypeA, "create")).error().code, EACCES);
  EXPECT_EQ(WriteErrno(name, "x"), EACCES);
  EXPECT_EQ(WriteErrno(Cat(kTypeA, "available_instances"), "9"), EACCES);
}

TEST_F(TreeTest, DotDotLeavesTheDirectoryALinkLeadsTo) {
  // As in the VFS: ".." after a followed link is the target's parent.
  EXPECT_EQ(*tree_.Resolve("class/mdev_bus/test_parent/.."), "devices/virtual/umdev");
  EXPECT_EQ(*tree_.Resolve("class/./mdev_bus/../.."), "");
  EXPECT_EQ(*tree_.Resolve(".."), "");
  EXPECT_EQ(*tree_.Read("class/mdev_bus/test_parent/mdev_supported_types/../mdev_supported_types/"
                        "test-a//name"),
            "Type A\n");
}

TEST_F(TreeTest, AnUnregisteredParentLeavesNothingBehind) {
  const std::string dev = Create();
  ASSERT_TRUE(registry_.UnregisterParent("test_parent").has_value());
  EXPECT_THAT(*tree_.List("class/mdev_bus"), IsEmpty());
  EXPECT_THAT(*tree_.List("bus/mdev/devices"), IsEmpty());
  EXPECT_THAT(*tree_.List("bus/mdev/drivers"), IsEmpty());
  EXPECT_THAT(*tree_.List("kernel/iommu_groups"), IsEmpty());
  EXPECT_EQ(tree_.Stat(dev).error().code, ENOENT);
  EXPECT_EQ(WriteErrno(Cat(kTypeA, "create"), kUuid), ENOENT);
}

TEST_F(TreeTest, AttributesOfARemovedInstanceAreGone) {
  const std::string dev = Create();
  ASSERT_TRUE(registry_.RemoveMdev(Uuid::Parse(kUuid).value()).has_value());
  EXPECT_EQ(tree_.Read(Cat(dev, "label")).error().code, ENOENT);
  EXPECT_EQ(WriteErrno(Cat(dev, "remove"), "1"), ENOENT);
}

}  // namespace
}  // namespace umdev::sysfs
