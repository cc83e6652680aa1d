// umdevctl passthrough's commands against a scratch sysfs and a scripted
// daemon: what bind refuses before writing anything, the writes it makes,
// unbind's refusals, and list's table and JSON. The kernel's side (the
// driver really changing) is passthrough_guest_test's.
#include "umdev/cli/passthrough.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace umdev::cli {
namespace {

namespace fs = std::filesystem;

std::string Slurp(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class PassthroughCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/passthrough-cli-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    root_ = dir;
    for (const char* driver : {"vfio-pci", "e1000e"}) {
      fs::create_directories(root_ / "bus/pci/drivers" / driver);
      std::ofstream(root_ / "bus/pci/drivers" / driver / "unbind");
    }
    std::ofstream(root_ / "bus/pci/drivers_probe");
    fs::create_directories(root_ / "kernel/iommu_groups/5/devices");
    Function("0000:01:00.0", "");
    Function("0000:01:00.1", "e1000e");
  }
  void TearDown() override { fs::remove_all(root_); }
  void Function(const std::string& address, const std::string& driver) {
    const fs::path device = root_ / "bus/pci/devices" / address;
    fs::create_directories(device);
    std::ofstream(device / "driver_override");
    fs::create_directory_symlink(root_ / "kernel/iommu_groups/5", device / "iommu_group");
    fs::create_directory_symlink(device, root_ / "kernel/iommu_groups/5/devices" / address);
    if (!driver.empty()) {
      fs::create_directory_symlink(root_ / "bus/pci/drivers" / driver, device / "driver");
    }
  }
  pci::Sysfs sysfs() const { return pci::Sysfs(root_.string()); }
  static Transport Daemon(nlohmann::json devices) {
    return [devices](const nlohmann::json& request) -> Result<nlohmann::json> {
      if (request.value("cmd", "") != "devices") return Fail(EINVAL, "unexpected request");
      return nlohmann::json{{"ok", true}, {"devices", devices}};
    };
  }

  fs::path root_;
};

TEST_F(PassthroughCliTest, BindRefusesAGroupWithAMemberOnAHostDriverBeforeWriting) {
  const Outcome refused = PassthroughBind(sysfs(), {"01:00.0"});
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.err.find("0000:01:00.1 (e1000e) still bound"), std::string::npos)
      << refused.err;
  EXPECT_EQ(Slurp(root_ / "bus/pci/devices/0000:01:00.0/driver_override"), "");
  EXPECT_EQ(PassthroughBind(sysfs(), {"0000:01:00.9"}).status, 1);
  EXPECT_NE(PassthroughBind(sysfs(), {"bogus"}).err.find("not a PCI address"), std::string::npos);
}

TEST_F(PassthroughCliTest, BindWritesWhatDriverctlWrites) {
  // Both members at once: the group is whole. A scratch tree has no kernel
  // to rebind, so the check after the writes reports it.
  const Outcome outcome = PassthroughBind(sysfs(), {"0000:01:00.1", "0000:01:00.0"});
  EXPECT_EQ(outcome.status, 1);
  EXPECT_NE(outcome.err.find("vfio-pci did not take it (modprobe vfio-pci)"), std::string::npos)
      << outcome.err;
  EXPECT_EQ(Slurp(root_ / "bus/pci/devices/0000:01:00.1/driver_override"), "vfio-pci");
  EXPECT_EQ(Slurp(root_ / "bus/pci/drivers/e1000e/unbind"), "0000:01:00.1");
  EXPECT_EQ(Slurp(root_ / "bus/pci/drivers_probe"), "0000:01:00.1");
}

TEST_F(PassthroughCliTest, UnbindRefusesWhatTheDaemonServesOrVfioPciDoesNotHold) {
  fs::create_directory_symlink(root_ / "bus/pci/drivers/vfio-pci",
                               root_ / "bus/pci/devices/0000:01:00.0/driver");
  const Outcome served = PassthroughUnbind(
      Daemon({{{"name", "0000:01:00.0"}, {"iommu_group", 5}}}), sysfs(), {"0000:01:00.0"});
  EXPECT_EQ(served.status, 1);
  EXPECT_NE(served.err.find("umdevd serves 0000:01:00.0"), std::string::npos) << served.err;
  const Outcome not_ours =
      PassthroughUnbind(Daemon(nlohmann::json::array()), sysfs(), {"0000:01:00.1"});
  EXPECT_NE(not_ours.err.find("is not bound to vfio-pci"), std::string::npos);
  const Outcome released =
      PassthroughUnbind(Daemon(nlohmann::json::array()), sysfs(), {"0000:01:00.0"});
  EXPECT_NE(released.out.find("0000:01:00.0: vfio-pci -> "), std::string::npos) << released.err;
  EXPECT_EQ(Slurp(root_ / "bus/pci/drivers/vfio-pci/unbind"), "0000:01:00.0");
  EXPECT_EQ(Slurp(root_ / "bus/pci/devices/0000:01:00.0/driver_override"), "\n");
}

TEST_F(PassthroughCliTest, ListShowsTheServedFunctions) {
  const Transport daemon = Daemon(
      {{{"name", "0000:01:00.1"},
        {"driver", "passthrough"},
        {"iommu_group", 5},
        {"open", true},
        {"vm", {{"pid", 99}, {"accel", "none"}}}},
       {{"name", "0000:01:00.0"},
        {"driver", "passthrough"},
        {"iommu_group", 5},
        {"open", true},
        {"vm", {{"name", "vm7"}, {"pid", 4242}, {"accel", "kvm"}, {"uuid", ""}}}},
       {{"name", "0000:02:00.0"},
        {"driver", "passthrough"},
        {"iommu_group", 6},
        {"open", false},
        {"needs_reset", "no reset of the function alone (FLR, PM) and no bus reset"}}});
  const Outcome table = PassthroughList(daemon, sysfs(), false);
  EXPECT_EQ(table.status, 0);
  EXPECT_NE(table.out.find("0000:01:00.1 group 5 e1000e open by pid 99\n"), std::string::npos)
      << table.out;
  EXPECT_NE(table.out.find("0000:01:00.0 group 5 (no driver) open by vm7 (pid 4242"),
            std::string::npos)
      << table.out;
  // A function umdevd could not reset since its last client says so.
  EXPECT_NE(table.out.find("0000:02:00.0 group 6 (no driver) idle, not reset since its last "
                           "client\n"),
            std::string::npos)
      << table.out;
  EXPECT_EQ(table.out.find("open by pid 99, not reset"), std::string::npos) << table.out;
  const Outcome json = PassthroughList(daemon, sysfs(), true);
  const auto parsed = nlohmann::json::parse(json.out);
  ASSERT_EQ(parsed.size(), 3u);
  EXPECT_FALSE(parsed[0].contains("needs_reset"));
  EXPECT_NE(parsed[2]["needs_reset"].get<std::string>().find("no bus reset"), std::string::npos);
  EXPECT_EQ(parsed[0]["address"], "0000:01:00.1");
  EXPECT_EQ(parsed[0]["iommu_group"], 5);
  EXPECT_EQ(parsed[0]["open"], true);
  const Transport down = [](const nlohmann::json&) -> Result<nlohmann::json> {
    return Fail(ECONNREFUSED, "connect control.sock");
  };
  EXPECT_EQ(PassthroughList(down, sysfs(), false).status, 1);
}

}  // namespace
}  // namespace umdev::cli
