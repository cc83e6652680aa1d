// umdevctl against a running umdevd (the testbed build with a test parent):
// real processes, real control socket, mdevctl's output and exit codes.
#include <nlohmann/json.hpp>

#include "cli_fixture.h"

namespace {

using umdev::test::Output;
using CliTest = umdev::test::CliFixture;
namespace fs = std::filesystem;

constexpr const char* kUuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";

TEST_F(CliTest, TypesPrintsMdevctlText) {
  const Output types = Ctl("types -p parent0");
  EXPECT_EQ(types.status, 0);
  EXPECT_EQ(types.out,
            "parent0\n"
            "  test-a\n"
            "    Available instances: 2\n"
            "    Device API: vfio-pci\n"
            "    Name: Type A\n"
            "    Description: first test type\n"
            "  test-b\n"
            "    Available instances: 2\n"
            "    Device API: vfio-pci\n"
            "    Name: b\n");
}

TEST_F(CliTest, StartListStopRoundTrip) {
  const Output start = Ctl(std::string("start -p parent0 -t test-a -u ") + kUuid);
  ASSERT_EQ(start.status, 0) << start.out;
  EXPECT_EQ(start.out, "") << "mdevctl prints the UUID only when it made it";
  EXPECT_EQ(Ctl("list").out, std::string(kUuid) + " parent0 test-a manual\n");
  const auto json = nlohmann::json::parse(Ctl("list --dumpjson").out);
  EXPECT_EQ(json[0]["parent0"][0][kUuid]["mdev_type"], "test-a");
  EXPECT_EQ(Ctl("types -p parent0 --dumpjson").out.find("\"available_instances\": 1") !=
                std::string::npos,
            true);
  EXPECT_EQ(Ctl(std::string("stop -u ") + kUuid).status, 0);
  EXPECT_EQ(Ctl("list").out, "");
}

TEST_F(CliTest, StartWithoutUuidPrintsAGeneratedOne) {
  const Output start = Ctl("start -p parent1 -t test-b");
  ASSERT_EQ(start.status, 0) << start.out;
  ASSERT_EQ(start.out.size(), 37u);
  EXPECT_EQ(Ctl("list -p parent1").out, start.out.substr(0, 36) + " parent1 test-b manual\n");
}

TEST_F(CliTest, ErrorsUseMdevctlMessagesAndExitCode) {
  EXPECT_EQ(Ctl("start -p Parent0 -t test-a").out,
            "Error: Unable to find parent device 'Parent0'. Did you mean 'parent0'?\n");
  EXPECT_EQ(Ctl("start -p parent0 -t test-z").out,
            "Error: Parent parent0 does not support mdev type test-z\n");
  ASSERT_EQ(Ctl(std::string("start -p parent0 -t test-a -u ") + kUuid).status, 0);
  EXPECT_EQ(Ctl(std::string("start -p parent0 -t test-a -u ") + kUuid).out,
            "Error: Device already exists\n");
  EXPECT_EQ(Ctl(std::string("start -p parent1 -t test-a -u ") + kUuid).out,
            "Error: Device exists under different parent\n");
  ASSERT_EQ(Ctl("start -p parent0 -t test-b").status, 0);
  const Output full = Ctl("start -p parent0 -t test-b");
  EXPECT_EQ(full.status, 1);
  EXPECT_EQ(full.out, "Error: No available instances of test-b on parent0\n");
  const Output bad = Ctl("start -p parent0 -t test-a -u not-a-uuid");
  EXPECT_EQ(bad.status, 2) << "a usage error, as clap's";
  EXPECT_EQ(bad.out,
            "error: invalid value 'not-a-uuid' for '--uuid <UUID>': invalid character: expected an "
            "optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `n` at 1\n\n"
            "For more information, try '--help'.\n");
  const Output unknown = Ctl("stop -u 00000000-0000-4000-8000-000000000000");
  EXPECT_EQ(unknown.status, 1);
  EXPECT_EQ(unknown.out,
            "Error: Device 00000000-0000-4000-8000-000000000000 is not an active mdev\n");
}

TEST_F(CliTest, NoDaemonIsAClearError) {
  ASSERT_EQ(WEXITSTATUS(StopDaemon()), 0);
  const Output types = Ctl("types");
  EXPECT_EQ(types.status, 1);
  EXPECT_NE(types.out.find("cannot reach umdevd"), std::string::npos);
}

TEST_F(CliTest, DaemonRemovesInstancesAndSocketOnSigterm) {
  ASSERT_EQ(Ctl(std::string("start -p parent0 -t test-a -u ") + kUuid).status, 0);
  const int status = StopDaemon();
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_FALSE(fs::exists(dir_ / "state" / "control.sock"));
  // A new daemon on the same state dir starts (the lock died with the old one).
  daemon_ = StartDaemon();
  EXPECT_EQ(Ctl("list").out, "");
}

TEST_F(CliTest, SecondDaemonOnTheSameStateDirExitsWithAnError) {
  const std::string state = (dir_ / "state").string();
  const std::string command = std::string(UMDEVD_TESTBED) + " --state-dir " + state + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  std::array<char, 1024> chunk{};
  for (size_t n; (n = fread(chunk.data(), 1, chunk.size(), pipe)) > 0;) out.append(chunk.data(), n);
  EXPECT_EQ(WEXITSTATUS(pclose(pipe)), 1);
  EXPECT_NE(out.find("another umdevd is running"), std::string::npos);
}

}  // namespace
