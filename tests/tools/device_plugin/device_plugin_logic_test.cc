// umdev-device-plugin's logic without gRPC: configuration, the daemon's
// view, health, instance planning, Allocate's contents and the preferred
// allocation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "umdev/device_plugin/allocation.h"
#include "umdev/device_plugin/config.h"
#include "umdev/device_plugin/inventory.h"

namespace umdev::device_plugin {
namespace {

using Json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr const char* kA = "00000000-0000-0000-0000-00000000000a";
constexpr const char* kB = "00000000-0000-0000-0000-00000000000b";
constexpr const char* kC = "00000000-0000-0000-0000-00000000000c";
constexpr const char* kD = "00000000-0000-0000-0000-00000000000d";

ResourceSpec Serial() { return {.name = "serial", .type = "mtty-1", .parents = {{"mtty0", 2}, {"mtty1", 2}}}; }

TEST(DevicePluginConfigTest, ResourceFlagNamesParentAndType) {
  const ResourceSpec spec = ParseResourceFlag("gpu0.gpu-1of4=4").value();
  EXPECT_EQ(spec.name, "gpu0.gpu-1of4");
  EXPECT_EQ(spec.FullName(), "umdev.io/gpu0.gpu-1of4");
  EXPECT_EQ(spec.type, "gpu-1of4");
  ASSERT_EQ(spec.parents.size(), 1u);
  EXPECT_EQ(spec.parents[0].parent, "gpu0");
  EXPECT_EQ(spec.parents[0].count, 4u);
  // The type may hold dots; the parent may not.
  EXPECT_EQ(ParseResourceFlag("p.t.x=1").value().type, "t.x");
  for (const char* bad : {"gpu0", "gpu0.t", "gpu0.t=", "gpu0.t=x", ".t=1", "p.=1", "p.t=-1", "p.t=99999999999"}) {
    EXPECT_EQ(ParseResourceFlag(bad).error().code, EINVAL) << bad;
  }
}

TEST(DevicePluginConfigTest, FileResourcesNameThemselvesAndAreChecked) {
  const auto specs = ParseResources(Json::parse(R"([
      {"type": "gpu-1of4", "parents": {"gpu0": 4}},
      {"type": "mtty-1", "parents": {"a": 1, "b": 2}},
      {"name": "fast", "type": "gpu-1of2", "parents": {"gpu1": 2}}])"))
                         .value();
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_EQ(specs[0].name, "gpu0.gpu-1of4");
  EXPECT_EQ(specs[1].name, "mtty-1");
  EXPECT_EQ(specs[1].parents.size(), 2u);
  EXPECT_EQ(specs[2].name, "fast");
  EXPECT_TRUE(ValidateResources(specs).has_value());

  EXPECT_THAT(ParseResources(Json::object()).error().context, HasSubstr("not a list"));
  EXPECT_THAT(ParseResources(Json::parse(R"([{"type": "t"}])")).error().context, HasSubstr("parents"));
  EXPECT_THAT(ParseResources(Json::parse(R"([{"type": "t", "parents": {"p": -1}}])")).error().context,
              HasSubstr("not a number"));
  EXPECT_THAT(ParseResources(Json::parse(R"([{"type": "t", "parents": {"p": 1025}}])")).error().context,
              HasSubstr("at most 1024"));
  EXPECT_THAT(ParseResources(Json::parse(R"([{"type": "t", "parents": {"p": 1}, "extra": 1}])")).error().context,
              HasSubstr("unknown key"));
  EXPECT_EQ(ParseResources(Json::parse(R"([3])")).error().code, EINVAL);
  EXPECT_TRUE(ParseResources(Json::array()).value().empty());
}

TEST(DevicePluginConfigTest, ValidationRefusesWhatKubeletOrUmdevdWould) {
  EXPECT_THAT(ValidateResources({}).error().context, HasSubstr("no resources"));
  ResourceSpec bad_name = Serial();
  bad_name.name = "-serial";
  EXPECT_THAT(ValidateResources({bad_name}).error().context, HasSubstr("not a resource name"));
  bad_name.name = std::string(64, 'a');
  EXPECT_EQ(ValidateResources({bad_name}).error().code, EINVAL);
  EXPECT_THAT(ValidateResources({Serial(), Serial()}).error().context, HasSubstr("named twice"));
  ResourceSpec other = Serial();
  other.name = "other";
  other.parents = {{"mtty1", 1}};
  EXPECT_THAT(ValidateResources({Serial(), other}).error().context, HasSubstr("belongs to two resources"));
  ResourceSpec huge{.name = "huge", .type = "t", .parents = {}};
  for (int i = 0; i < 5; ++i) huge.parents.push_back({"p" + std::to_string(i), 1000});
  EXPECT_THAT(ValidateResources({huge}).error().context, HasSubstr("at most 4096"));
  EXPECT_TRUE(IsResourceName("gpu0.gpu-1of4"));
  EXPECT_FALSE(IsResourceName("gpu/x"));
  EXPECT_FALSE(IsResourceName(""));
}

Json Types(std::initializer_list<const char*> parents) {
  Json list = Json::array();
  for (const char* p : parents) list.push_back({{"name", p}, {"types", Json::array()}});
  return {{"ok", true}, {"parents", list}};
}

Json Running(std::vector<std::tuple<const char*, const char*, const char*, bool>> mdevs) {
  Json list = Json::array();
  for (const auto& [uuid, parent, type, broken] : mdevs) {
    list.push_back({{"uuid", uuid}, {"parent", parent}, {"type", type}, {"open", false}, {"broken", broken}});
  }
  return {{"ok", true}, {"mdevs", list}};
}

Json Defined(std::vector<std::tuple<const char*, const char*, const char*>> definitions) {
  Json list = Json::array();
  for (const auto& [uuid, parent, type] : definitions) {
    list.push_back({{"uuid", uuid}, {"parent", parent}, {"mdev_type", type}, {"start", "auto"}});
  }
  return {{"ok", true}, {"definitions", list}};
}

TEST(DevicePluginInventoryTest, HealthFollowsParentRunningAndBroken) {
  const DaemonView view =
      ParseDaemonView(Types({"mtty0"}),
                      Running({{kA, "mtty0", "mtty-1", false}, {kB, "mtty0", "mtty-1", true}}),
                      Defined({{kD, "mtty1", "mtty-1"}, {kC, "mtty0", "mtty-1"}, {kB, "mtty0", "mtty-1"},
                               {kA, "mtty0", "mtty-1"}, {"ffffffff-0000-0000-0000-000000000000", "mtty0", "mtty-2"}}))
          .value();
  const std::vector<DeviceState> devices = DevicesOf(Serial(), view);
  ASSERT_EQ(devices.size(), 4u);  // The mtty-2 definition is another resource's.
  EXPECT_EQ(devices[0], (DeviceState{kA, "mtty0", true, ""}));
  EXPECT_EQ(devices[1], (DeviceState{kB, "mtty0", false, "broken: its pins were revoked"}));
  EXPECT_EQ(devices[2], (DeviceState{kC, "mtty0", false, "not running"}));
  EXPECT_EQ(devices[3], (DeviceState{kD, "mtty1", false, "parent mtty1 is not registered"}));
}

TEST(DevicePluginInventoryTest, MalformedRepliesAreProtocolErrors) {
  const Json ok_list = Running({});
  const Json ok_defined = Defined({});
  EXPECT_EQ(ParseDaemonView(Json::array(), ok_list, ok_defined).error().code, EPROTO);
  EXPECT_EQ(ParseDaemonView(Types({"p"}), Json{{"mdevs", 3}}, ok_defined).error().code, EPROTO);
  EXPECT_EQ(ParseDaemonView(Types({"p"}), Json{{"mdevs", {{{"uuid", 1}}}}}, ok_defined).error().code, EPROTO);
  EXPECT_THAT(ParseDaemonView(Types({"p"}), ok_list, Json{{"definitions", {{{"uuid", kA}}}}}).error().context,
              HasSubstr("parent"));
  EXPECT_TRUE(ParseDaemonView(Types({}), ok_list, ok_defined).has_value());
}

TEST(DevicePluginInventoryTest, PlanDefinesTheShortfallAndStartsWhatIsStopped) {
  const DaemonView view = ParseDaemonView(Types({"mtty0"}), Running({{kA, "mtty0", "mtty-1", false}}),
                                          Defined({{kA, "mtty0", "mtty-1"}, {kB, "mtty0", "mtty-1"}}))
                              .value();
  int serial = 0;
  const auto uuids = [&] { return "new-" + std::to_string(serial++); };
  ResourceSpec spec = Serial();
  spec.parents = {{"mtty0", 3}, {"mtty1", 2}};
  // mtty1 is not registered: nothing is asked of it yet.
  EXPECT_THAT(PlanInstances(spec, view, uuids),
              ElementsAre(InstanceAction{InstanceAction::Kind::kStart, "mtty0", "mtty-1", kB},
                          InstanceAction{InstanceAction::Kind::kDefine, "mtty0", "mtty-1", "new-0"}));
  // More defined than configured: adopted, none removed.
  spec.parents = {{"mtty0", 1}};
  EXPECT_THAT(PlanInstances(spec, view, uuids),
              ElementsAre(InstanceAction{InstanceAction::Kind::kStart, "mtty0", "mtty-1", kB}));
}

std::vector<DeviceState> Pool() {
  return {{kA, "mtty0", true, ""}, {kB, "mtty0", true, ""}, {kC, "mtty1", true, ""},
          {kD, "mtty1", false, "not running"}};
}

TEST(DevicePluginAllocationTest, AContainerGetsSocketsVariablesAndCdiNames) {
  const SocketLayout layout{"/run/umdev/vfio-user", "/dev/umdev"};
  const ContainerAllocation a = AllocateContainer(Serial(), Pool(), {kC, kA}, layout).value();
  ASSERT_EQ(a.mounts.size(), 2u);
  EXPECT_EQ(a.mounts[0], (SocketMount{std::string("/dev/umdev/") + kC + ".sock",
                                      std::string("/run/umdev/vfio-user/") + kC + ".sock"}));
  const std::string both = std::string("/dev/umdev/") + kC + ".sock,/dev/umdev/" + kA + ".sock";
  EXPECT_EQ(a.envs.at("UMDEV_SOCKETS"), both);
  EXPECT_EQ(a.envs.at("UMDEV_SOCKETS_SERIAL"), both);
  EXPECT_EQ(a.envs.at("UMDEV_SOCKET_00000000_0000_0000_0000_00000000000A"),
            std::string("/dev/umdev/") + kA + ".sock");
  EXPECT_EQ(a.envs.size(), 4u);
  EXPECT_THAT(a.cdi_devices, ElementsAre(std::string("umdev.io/device=") + kC, std::string("umdev.io/device=") + kA));
  EXPECT_EQ(ResourceVariable({.name = "gpu0.gpu-1of4", .type = "", .parents = {}}), "UMDEV_SOCKETS_GPU0_GPU_1OF4");
}

TEST(DevicePluginAllocationTest, BadRequestsAreRefused) {
  const SocketLayout layout{"/h", "/c"};
  EXPECT_EQ(AllocateContainer(Serial(), Pool(), {}, layout).error().code, EINVAL);
  EXPECT_EQ(AllocateContainer(Serial(), Pool(), {"nope"}, layout).error().code, EINVAL);
  EXPECT_EQ(AllocateContainer(Serial(), Pool(), {kA, kA}, layout).error().code, EINVAL);
  EXPECT_EQ(AllocateContainer(Serial(), Pool(), {kD}, layout).error().code, ENODEV);
  // An ID kubelet echoes back is cut short in the message.
  const auto long_id = AllocateContainer(Serial(), Pool(), {std::string(100000, 'x')}, layout);
  EXPECT_LT(long_id.error().context.size(), 200u);
  EXPECT_EQ(AllocateContainer(Serial(), Pool(), std::vector<std::string>(kMaxDevicesPerRequest + 1, kA), layout)
                .error()
                .code,
            EINVAL);
}

TEST(DevicePluginAllocationTest, PreferredAllocationKeepsToOneParent) {
  std::vector<DeviceState> devices;
  const char* const ids[] = {"a0", "a1", "a2", "b0", "b1", "c0", "c1", "c2", "c3"};
  for (const char* id : ids) devices.push_back({id, std::string("p") + id[0], true, ""});
  const std::vector<std::string> all(std::begin(ids), std::end(ids));
  // Two fit whole on b (the smallest pool that fits), leaving a and c whole.
  EXPECT_THAT(PreferredAllocation(devices, all, {}, 2).value(), ElementsAre("b0", "b1"));
  // Four fit only on c.
  EXPECT_THAT(PreferredAllocation(devices, all, {}, 4).value(), ElementsAre("c0", "c1", "c2", "c3"));
  // A required device pulls the rest to its parent first.
  EXPECT_THAT(PreferredAllocation(devices, all, {"a2"}, 3).value(), ElementsAre("a2", "a0", "a1"));
  // Too many for one parent: the largest pools first.
  EXPECT_THAT(PreferredAllocation(devices, all, {}, 6).value(), ElementsAre("c0", "c1", "c2", "c3", "a0", "a1"));
  EXPECT_THAT(PreferredAllocation(devices, {"a0", "b0"}, {}, 0).value(), ElementsAre());
}

TEST(DevicePluginAllocationTest, PreferredAllocationRefusesInconsistentRequests) {
  const std::vector<DeviceState> devices = Pool();
  EXPECT_EQ(PreferredAllocation(devices, {kA}, {}, 2).error().code, EINVAL);
  EXPECT_EQ(PreferredAllocation(devices, {kA}, {}, -1).error().code, EINVAL);
  EXPECT_EQ(PreferredAllocation(devices, {kA, kB}, {kA, kB}, 1).error().code, EINVAL);
  EXPECT_EQ(PreferredAllocation(devices, {"nope"}, {}, 1).error().code, EINVAL);
  EXPECT_EQ(PreferredAllocation(devices, {kA, kA}, {}, 1).error().code, EINVAL);
  EXPECT_EQ(PreferredAllocation(devices, {kA, kB}, {kC}, 1).error().code, EINVAL);
}

}  // namespace
}  // namespace umdev::device_plugin
