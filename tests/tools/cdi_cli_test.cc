// umdevctl cdi generate against a running testbed daemon: the spec file
// follows the running devices (written whole, 0644), stdout with -o -, no
// file without devices, and the errors.
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "cli_fixture.h"

namespace {

using umdev::test::Output;
using CdiCliTest = umdev::test::CliFixture;
using Json = nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kU1 = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
constexpr const char* kU2 = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1002";

std::vector<std::string> Names(const Json& spec) {
  std::vector<std::string> names;
  for (const Json& d : spec["devices"]) names.push_back(d["name"].get<std::string>());
  return names;
}

TEST_F(CdiCliTest, TheSpecFollowsTheRunningDevices) {
  ASSERT_EQ(Ctl(std::string("start -p parent0 -t test-a -u ") + kU1).status, 0);
  ASSERT_EQ(Ctl(std::string("start -p parent1 -t test-b -u ") + kU2).status, 0);
  const fs::path file = dir_ / "cdi" / "umdev.io-device.json";
  const Output generated = Ctl("cdi generate -o " + file.string());
  ASSERT_EQ(generated.status, 0) << generated.out;
  EXPECT_EQ(generated.out, "");
  const Json spec = Json::parse(ReadFile(file));
  EXPECT_EQ(spec["kind"], "umdev.io/device");
  EXPECT_EQ(Names(spec), (std::vector<std::string>{kU1, kU2, "parent0.test-a", "parent1.test-b"}));
  const Json& mount = spec["devices"][0]["containerEdits"]["mounts"][0];
  EXPECT_EQ(mount["hostPath"], (dir_ / "state" / "vfio-user" / (std::string(kU1) + ".sock")).string());
  EXPECT_EQ(mount["containerPath"], std::string("/run/umdev/vfio-user/") + kU1 + ".sock");
  EXPECT_TRUE(fs::exists(mount["hostPath"].get<std::string>()));
  struct stat st {};
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  EXPECT_FALSE(fs::exists(file.string() + ".tmp"));

  // A device stopped is gone at the next generate; none left, no file.
  ASSERT_EQ(Ctl(std::string("stop -u ") + kU2).status, 0);
  ASSERT_EQ(Ctl("cdi generate -o " + file.string()).status, 0);
  EXPECT_EQ(Names(Json::parse(ReadFile(file))), (std::vector<std::string>{kU1, "parent0.test-a"}));
  ASSERT_EQ(Ctl(std::string("stop -u ") + kU1).status, 0);
  const Output emptied = Ctl("cdi generate -o " + file.string());
  EXPECT_EQ(emptied.status, 0);
  EXPECT_EQ(emptied.out, "No running devices: removed " + file.string() + "\n");
  EXPECT_FALSE(fs::exists(file));
}

TEST_F(CdiCliTest, StdoutAndTheDirectoriesAreTheCallersChoice) {
  ASSERT_EQ(Ctl(std::string("start -p parent0 -t test-a -u ") + kU1).status, 0);
  const Output printed = Ctl("cdi generate -o - --socket-dir /srv/s --container-dir /dev/umdev");
  ASSERT_EQ(printed.status, 0) << printed.out;
  const Json spec = Json::parse(printed.out);
  const Json& mount = spec["devices"][0]["containerEdits"]["mounts"][0];
  EXPECT_EQ(mount["hostPath"], std::string("/srv/s/") + kU1 + ".sock");
  EXPECT_EQ(mount["containerPath"], std::string("/dev/umdev/") + kU1 + ".sock");
}

TEST_F(CdiCliTest, ErrorsNameWhatIsWrong) {
  ASSERT_EQ(Ctl(std::string("start -p parent0 -t test-a -u ") + kU1).status, 0);
  const Output relative = Ctl("cdi generate -o - --container-dir dev/umdev");
  EXPECT_EQ(relative.status, 1);
  EXPECT_EQ(relative.out, "Error: Invalid --container-dir: 'dev/umdev' is not absolute\n");
  // A file where the spec's directory should be.
  WriteFile("blocker", "x");
  const Output unwritable = Ctl("cdi generate -o " + (dir_ / "blocker" / "spec.json").string());
  EXPECT_EQ(unwritable.status, 1);
  EXPECT_NE(unwritable.out.find("Error: Failed to write"), std::string::npos) << unwritable.out;
  EXPECT_EQ(Ctl("cdi").status, 2);
  EXPECT_EQ(Ctl("cdi bogus").status, 2);
}

}  // namespace
