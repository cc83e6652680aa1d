// CdiSpec and ValidateCdiSpec: the spec umdevctl cdi generate writes, field
// by field, and the CDI specification's rules it is checked against.
#include <gtest/gtest.h>

#include "umdev/cli/cdi.h"

namespace umdev::cli {
namespace {

using Json = nlohmann::json;

constexpr const char* kA = "aaaaaaaa-0000-4000-8000-000000000001";
constexpr const char* kB = "bbbbbbbb-0000-4000-8000-000000000002";
constexpr const char* kC = "cccccccc-0000-4000-8000-000000000003";
const CdiLayout kLayout{"/run/umdev/vfio-user", "/dev/umdev"};

Json MountOf(const std::string& uuid) {
  return {{"hostPath", "/run/umdev/vfio-user/" + uuid + ".sock"},
          {"containerPath", "/dev/umdev/" + uuid + ".sock"},
          {"options", {"bind"}}};
}

TEST(CdiSpecTest, EachInstanceIsADeviceAndEachTypeCarriesAllItsInstances) {
  std::vector<std::string> skipped;
  const Json spec = CdiSpec({{kB, "gpu0", "gpu-1of4"}, {kA, "gpu0", "gpu-1of4"}, {kC, "mtty", "mtty-2"}},
                            kLayout, &skipped);
  EXPECT_TRUE(skipped.empty());
  EXPECT_EQ(spec["cdiVersion"], "0.6.0");
  EXPECT_EQ(spec["kind"], "umdev.io/device");
  ASSERT_EQ(spec["devices"].size(), 5u);
  // Ordered by name: the UUIDs, then PARENT.TYPE.
  const Json& a = spec["devices"][0];
  EXPECT_EQ(a, (Json{{"name", kA},
                     {"annotations", {{"umdev.io/parent", "gpu0"}, {"umdev.io/type", "gpu-1of4"}}},
                     {"containerEdits",
                      {{"env", {"UMDEV_SOCKET_AAAAAAAA_0000_4000_8000_000000000001=/dev/umdev/" +
                                std::string(kA) + ".sock"}},
                       {"mounts", {MountOf(kA)}}}}}));
  EXPECT_EQ(spec["devices"][1]["name"], kB);
  EXPECT_EQ(spec["devices"][2]["name"], kC);
  const Json& type = spec["devices"][3];
  EXPECT_EQ(type["name"], "gpu0.gpu-1of4");
  EXPECT_EQ(type["containerEdits"]["mounts"], (Json{MountOf(kB), MountOf(kA)}));
  EXPECT_EQ(type["containerEdits"]["env"].back(),
            "UMDEV_SOCKETS=/dev/umdev/" + std::string(kB) + ".sock,/dev/umdev/" + kA + ".sock");
  EXPECT_EQ(spec["devices"][4]["name"], "mtty.mtty-2");
  EXPECT_TRUE(ValidateCdiSpec(spec).has_value());
}

TEST(CdiSpecTest, ATypeCdiCannotNameGetsNoDeviceOfItsOwn) {
  std::vector<std::string> skipped;
  const Json spec = CdiSpec({{kA, "pci/0000:00:04.0", "t"}}, kLayout, &skipped);
  EXPECT_EQ(skipped, std::vector<std::string>{"pci/0000:00:04.0.t"});
  ASSERT_EQ(spec["devices"].size(), 1u);
  EXPECT_TRUE(ValidateCdiSpec(spec).has_value());
}

TEST(CdiSpecTest, DeviceNamesFollowTheSpecification) {
  for (const char* good : {"a", "0", "gpu0.gpu-1of4", "x_y:z", kA}) EXPECT_TRUE(IsCdiDeviceName(good)) << good;
  for (const char* bad : {"", "-a", "a-", ".a", "a/b", "a b", "a=b", "é"}) {
    EXPECT_FALSE(IsCdiDeviceName(bad)) << bad;
  }
}

TEST(CdiSpecTest, EveryRuleViolationIsEinvalAndNamed) {
  const Json good = CdiSpec({{kA, "gpu0", "gpu-1of4"}}, kLayout);
  ASSERT_TRUE(ValidateCdiSpec(good).has_value());
  const auto broken = [&](auto&& change) {
    Json spec = good;
    change(spec);
    auto valid = ValidateCdiSpec(spec);
    EXPECT_FALSE(valid.has_value()) << spec.dump();
    return valid.has_value() ? std::string() : valid.error().context;
  };
  EXPECT_EQ(broken([](Json& s) { s["cdiVersion"] = "0.5.0"; }),
            "CDI spec: cdiVersion 0.5.0 cannot carry device annotations");
  EXPECT_EQ(broken([](Json& s) { s.erase("cdiVersion"); }), "CDI spec: no cdiVersion");
  EXPECT_EQ(broken([](Json& s) { s["kind"] = "umdev.io"; }), "CDI spec: kind 'umdev.io' is not VENDOR/CLASS");
  EXPECT_EQ(broken([](Json& s) { s["kind"] = "umdev.io/dev.ice"; }),
            "CDI spec: kind 'umdev.io/dev.ice' is not VENDOR/CLASS");
  EXPECT_EQ(broken([](Json& s) { s["kind"] = "1umdev/device"; }),
            "CDI spec: kind '1umdev/device' is not VENDOR/CLASS");
  EXPECT_EQ(broken([](Json& s) { s["devices"] = Json::array(); }), "CDI spec: no devices");
  EXPECT_EQ(broken([](Json& s) { s["devices"][0]["name"] = "a/b"; }),
            "CDI spec: a device name is missing or not a CDI name");
  EXPECT_EQ(broken([](Json& s) { s["devices"].push_back(s["devices"][0]); }),
            std::string("CDI spec: device ") + kA + " is named twice");
  EXPECT_EQ(broken([](Json& s) { s["devices"][0]["containerEdits"] = Json::object(); }),
            std::string("CDI spec: device ") + kA + " has no edits");
  EXPECT_EQ(broken([](Json& s) { s["devices"][0]["containerEdits"]["env"] = Json::array(); }),
            std::string("CDI spec: device ") + kA + ": empty env");
  EXPECT_EQ(broken([](Json& s) { s["devices"][0]["containerEdits"]["env"][0] = "=x"; }),
            std::string("CDI spec: device ") + kA + ": env '=x' is not KEY=VALUE");
  EXPECT_EQ(broken([](Json& s) { s["devices"][0]["containerEdits"]["mounts"][0]["containerPath"] = "dev/x"; }),
            std::string("CDI spec: device ") + kA + ": a mount's containerPath is not absolute");
  EXPECT_EQ(broken([](Json& s) { s["devices"][0]["containerEdits"]["bogus"] = Json::array({1}); }),
            std::string("CDI spec: device ") + kA + ": unknown edit bogus");
}

}  // namespace
}  // namespace umdev::cli
