// umdev-probe against a running umdevd (the testbed build with a test
// parent): a real daemon, a real vfio-user socket, the CLI's output and exit
// codes.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "e2e/umdevd_process.h"
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kUuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa2002";

using Output = umdev::test::ShellOutput;

Output Shell(const std::string& command) { return umdev::test::RunShell(command); }

class ProbeCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Short: the socket path (dir/state/vfio-user/<uuid>.sock) must fit sun_path.
    static int counter = 0;
    dir_ = fs::temp_directory_path() /
           ("up-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "config.json")
        << R"({"parents":[{"driver":"test","name":"parent0"},{"driver":"test-pci","name":"pci0"}]})";
    const std::string state = (dir_ / "state").string();
    const std::string config = (dir_ / "config.json").string();
    daemon_ = fork();
    if (daemon_ == 0) {
      execl(UMDEVD_TESTBED, UMDEVD_TESTBED, "--state-dir", state.c_str(), "--config",
            config.c_str(), "--log-level", "warn", nullptr);
      _exit(127);
    }
    for (int i = 0; i < 500 && !fs::exists(dir_ / "state" / "control.sock"); ++i) {
      std::this_thread::sleep_for(10ms);
    }
    const Output start = Shell(std::string(UMDEVCTL) + " --state-dir " + state +
                               " start -p parent0 -t test-a -u " + kUuid + " 2>&1");
    ASSERT_EQ(start.status, 0) << start.out;
    socket_ = (dir_ / "state" / "vfio-user" / (std::string(kUuid) + ".sock")).string();
    for (int i = 0; i < 500 && !fs::exists(socket_); ++i) std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(fs::exists(socket_));
  }

  void TearDown() override {
    if (daemon_ > 0) {
      kill(daemon_, SIGTERM);
      int status = 0;
      waitpid(daemon_, &status, 0);
    }
    fs::remove_all(dir_);
  }

  // One umdev-probe run; stderr folded into the output.
  Output Probe(const std::string& args) {
    return Shell(std::string(UMDEV_PROBE) + " --socket " + socket_ + " " + args + " 2>&1");
  }

  // A script on stdin; stdout only unless |with_stderr|.
  Output Script(const std::string& flags, const std::string& script, bool with_stderr = true) {
    const fs::path file = dir_ / "script.txt";
    std::ofstream(file) << script;
    return Shell(std::string(UMDEV_PROBE) + " --socket " + socket_ + " " + flags + " - < " +
                 file.string() + (with_stderr ? " 2>&1" : " 2>/dev/null"));
  }

  fs::path dir_;
  pid_t daemon_ = -1;
  std::string socket_;
};

TEST_F(ProbeCliTest, InfoRegionsAndIrqsDescribeTheDevice) {
  const Output info = Probe("info");
  ASSERT_EQ(info.status, 0) << info.out;
  EXPECT_NE(info.out.find("Device: flags 0x2 (PCI), 9 regions, 5 irqs\n"), std::string::npos)
      << info.out;
  EXPECT_NE(info.out.find("\tControl: I/O- Mem- BusMaster-"), std::string::npos);
  const Output regions = Probe("regions");
  ASSERT_EQ(regions.status, 0) << regions.out;
  EXPECT_NE(regions.out.find("Region 7 (config): size 0x100, offset 0x0, flags READ WRITE\n"),
            std::string::npos)
      << regions.out;
  const Output irqs = Probe("irqs");
  ASSERT_EQ(irqs.status, 0) << irqs.out;
  EXPECT_NE(irqs.out.find("IRQ 0 (INTx): count 1, flags EVENTFD MASKABLE AUTOMASKED\n"),
            std::string::npos)
      << irqs.out;
  EXPECT_NE(irqs.out.find("IRQ 4 (REQ): count 1, flags EVENTFD\n"), std::string::npos);
}

TEST_F(ProbeCliTest, ConfigWritesAreReadBackInEveryWidth) {
  ASSERT_EQ(Probe("write config 0 0x32534348").status, 0);
  ASSERT_EQ(Probe("write config 8 0x07 1").status, 0);
  EXPECT_EQ(Probe("read config 0").out, "0x32534348\n");
  EXPECT_EQ(Probe("read config 2 2").out, "0x3253\n");
  EXPECT_EQ(Probe("read 7 0 --count 9").out,
            "00000000: 48 43 53 32 00 00 00 00 07\n");
  EXPECT_NE(Probe("info").out.find("Device [4348:3253] (rev 07)"), std::string::npos);
  EXPECT_EQ(Probe("reset").status, 0);
  EXPECT_EQ(Probe("read config 0").out, "0x00000000\n");  // The test device clears on reset.
}

TEST_F(ProbeCliTest, ErrorsNameTheCommandAndTheErrno) {
  const Output bad_region = Probe("read 9 0");
  EXPECT_EQ(bad_region.status, 1);
  EXPECT_EQ(bad_region.out, "read: region 9: Invalid argument (EINVAL)\n");
  const Output out_of_range = Probe("write config 0x100 1");
  EXPECT_EQ(out_of_range.status, 1);
  EXPECT_EQ(out_of_range.out, "write: region 7: Invalid argument (EINVAL)\n");
  const Output usage = Probe("read config");
  EXPECT_EQ(usage.status, 2);
  EXPECT_EQ(usage.out, "read: usage: read REGION OFFSET [WIDTH|--count N] [--mmap]\n");
  EXPECT_EQ(Probe("frobnicate").status, 2);
  const Output save = Probe("save " + (dir_ / "image").string());
  EXPECT_EQ(save.status, 1);
  EXPECT_EQ(save.out, "save: migration state: Inappropriate ioctl for device (ENOTTY)\n");
  const Output timeout = Probe("wait-irq 0 --timeout 20");
  EXPECT_EQ(timeout.status, 1);
  EXPECT_EQ(timeout.out,
            "wait-irq: irq 0 vector 0: no interrupt within 20 ms: Connection timed out "
            "(ETIMEDOUT)\n");
}

// --mmap reads and writes through the region's fd mapped as a client maps
// a BAR: the same memory the message path reaches, only where the device
// offers a mappable area.
TEST_F(ProbeCliTest, MmapAccessesReachTheSameMemoryAsMessages) {
  constexpr const char* kMmapUuid = "3c1f0d2e-5b6a-4c7d-8e9f-0a1b2c3d4e5f";
  const std::string state = (dir_ / "state").string();
  const Output start = Shell(std::string(UMDEVCTL) + " --state-dir " + state +
                             " start -p pci0 -t test_pci-mmap -u " + kMmapUuid + " 2>&1");
  ASSERT_EQ(start.status, 0) << start.out;
  socket_ = (dir_ / "state" / "vfio-user" / (std::string(kMmapUuid) + ".sock")).string();
  for (int i = 0; i < 500 && !fs::exists(socket_); ++i) std::this_thread::sleep_for(10ms);
  const Output out = Script("--keep-going",
                            "write 3 0x1000 0x12345678 4\n"
                            "read 3 0x1000 4 --mmap\n"
                            "write 3 0x1004 0xabcd 2 --mmap\n"
                            "read 3 0x1004 2\n"
                            "read 3 0x0 4 --mmap\n"
                            "read 0 0x0 4 --mmap\n");
  EXPECT_NE(out.out.find("0x12345678\n0xabcd\n"), std::string::npos) << out.out;
  EXPECT_NE(out.out.find("read: region 3: no mappable area holds 4 bytes at 0x0"),
            std::string::npos)
      << out.out;
  EXPECT_NE(out.out.find("cannot be mapped"), std::string::npos) << out.out;
  EXPECT_EQ(out.status, 1);
}

TEST_F(ProbeCliTest, AMissingSocketFailsToConnect) {
  socket_ = (dir_ / "nothing.sock").string();
  const Output info = Probe("info");
  EXPECT_EQ(info.status, 1);
  EXPECT_EQ(info.out.rfind("connect: connect ", 0), 0u) << info.out;
  EXPECT_NE(info.out.find("(ENOENT)"), std::string::npos);
}

TEST_F(ProbeCliTest, AScriptSharesOneConnectionAndGuestMemory) {
  const Output run = Script("",
                            "# guest memory, then what the client itself sees\n"
                            "map-memory 64K --no-fd\n"
                            "map-memory 1M --iova 0x100000\n"
                            "mem-write 0x10 de:ad:be:ef\n"
                            "mem-read 0x10 4\n"
                            "unmask-irq 0\n");
  ASSERT_EQ(run.status, 0) << run.out;
  EXPECT_EQ(run.out,
            "guest memory 0x0-0xffff (64K), no fd (message DMA)\n"
            "guest memory 0x100000-0x1fffff (1M), fd shared\n"
            "00000010: de ad be ef\n");
}

TEST_F(ProbeCliTest, AScriptStopsAtTheFirstErrorUnlessKeepGoing) {
  const std::string script = "write config 0 0x11\nread 9 0\nread config 0 1\n";
  const Output stopped = Script("", script);
  EXPECT_EQ(stopped.status, 1);
  EXPECT_EQ(stopped.out, "read: region 9: Invalid argument (EINVAL)\n");
  const Output kept = Script("--keep-going", script);
  EXPECT_EQ(kept.status, 1);
  EXPECT_EQ(kept.out, "read: region 9: Invalid argument (EINVAL)\n0x11\n");
}

TEST_F(ProbeCliTest, JsonPrintsOneObjectPerCommand) {
  const Output run = Script("--json --keep-going",
                            "read config 0 2\nread 9 0\nregions\nmap-memory 4K\n", false);
  EXPECT_EQ(run.status, 1);
  std::istringstream lines(run.out);
  std::vector<nlohmann::json> objects;
  for (std::string line; std::getline(lines, line);) objects.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(objects.size(), 4u) << run.out;
  EXPECT_EQ(objects[0]["command"], "read");
  EXPECT_EQ(objects[0]["value"], 0);
  EXPECT_EQ(objects[0]["width"], 2);
  EXPECT_EQ(objects[1]["error"]["errno"], EINVAL);
  EXPECT_EQ(objects[1]["error"]["name"], "EINVAL");
  EXPECT_EQ(objects[2]["regions"].size(), 9u);
  EXPECT_EQ(objects[2]["regions"][7]["size"], 256);
  EXPECT_EQ(objects[3]["size"], 4096);
  EXPECT_EQ(objects[3]["fd"], true);
}

}  // namespace
