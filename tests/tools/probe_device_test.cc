// umdev-probe driving the PCI test device of a running umdevd testbed:
// interrupts counted through armed eventfds, device DMA into the probe's guest
// memory (shared and message DMA), and migration from one instance to another.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "e2e/umdevd_process.h"

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kSource = "5f0f7a44-0d3c-4b9e-9d55-7b2a4c1e0001";
constexpr const char* kTarget = "5f0f7a44-0d3c-4b9e-9d55-7b2a4c1e0002";

using Output = umdev::test::ShellOutput;

Output Shell(const std::string& command) { return umdev::test::RunShell(command); }

class ProbeDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = fs::temp_directory_path() /
           ("upd-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "config.json") << R"({"parents":[{"driver":"test-pci","name":"pci0"}]})";
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
    for (const char* uuid : {kSource, kTarget}) {
      const Output start = Shell(std::string(UMDEVCTL) + " --state-dir " + state +
                                 " start -p pci0 -t test_pci-basic -u " + uuid + " 2>&1");
      ASSERT_EQ(start.status, 0) << start.out;
    }
  }

  void TearDown() override {
    if (daemon_ > 0) {
      kill(daemon_, SIGTERM);
      int status = 0;
      waitpid(daemon_, &status, 0);
    }
    fs::remove_all(dir_);
  }

  std::string SocketOf(const char* uuid) const {
    return (dir_ / "state" / "vfio-user" / (std::string(uuid) + ".sock")).string();
  }

  Output Probe(const char* uuid, const std::string& args) {
    return Shell(std::string(UMDEV_PROBE) + " --socket " + SocketOf(uuid) + " " + args + " 2>&1");
  }

  Output Script(const char* uuid, const std::string& script) {
    const fs::path file = dir_ / "script.txt";
    std::ofstream(file) << script;
    return Shell(std::string(UMDEV_PROBE) + " --socket " + SocketOf(uuid) + " - < " +
                 file.string() + " 2>&1");
  }

  fs::path dir_;
  pid_t daemon_ = -1;
};

// BAR0 registers of the PCI test device (tests/fakes/pci_test_device.h):
// 0x08 IRQ_RAISE, 0x0c IRQ_STATUS (RW1C), 0x10/0x14 DMA address, 0x18 length,
// 0x1c command (1 to the device, 2 from it, bit 8 interrupt when done),
// 0x20 status (2 done), 0x800 the device buffer.
TEST_F(ProbeDeviceTest, AnArmedIntxIsCountedAndTheUnmaskLetsTheNextOneThrough) {
  const Output run = Script(kSource,
                            "arm-irq 0\n"
                            "write 0 0x8 0 4\n"
                            "wait-irq 0 --timeout 5000\n"
                            "write 0 0xc 1 4\n"
                            "unmask-irq 0\n"
                            "write 0 0x8 0 4\n"
                            "wait-irq 0 --timeout 5000\n");
  ASSERT_EQ(run.status, 0) << run.out;
  EXPECT_EQ(run.out, "irq 0 vector 0: 1 interrupt(s)\nirq 0 vector 0: 1 interrupt(s)\n");
}

// The unmask as QEMU does it with KVM: an eventfd registered once
// (ACTION_UNMASK | DATA_EVENTFD) and signalled after each interrupt.
TEST_F(ProbeDeviceTest, AnUnmaskEventfdLetsEachNextIntxThrough) {
  const Output run = Script(kSource,
                            "arm-irq 0\n"
                            "write 0 0x8 0 4\n"
                            "wait-irq 0 --timeout 5000\n"
                            "write 0 0xc 1 4\n"
                            "unmask-irq 0 --eventfd\n"
                            "write 0 0x8 0 4\n"
                            "wait-irq 0 --timeout 5000\n"
                            "write 0 0xc 1 4\n"
                            "unmask-irq 0 --eventfd\n"
                            "write 0 0x8 0 4\n"
                            "wait-irq 0 --timeout 5000\n");
  ASSERT_EQ(run.status, 0) << run.out;
  EXPECT_EQ(run.out, "irq 0 vector 0: 1 interrupt(s)\nirq 0 vector 0: 1 interrupt(s)\n"
                     "irq 0 vector 0: 1 interrupt(s)\n");
  // Masked and not unmasked: the next one waits.
  const Output masked = Script(kTarget,
                               "arm-irq 0\n"
                               "write 0 0x8 0 4\n"
                               "wait-irq 0 --timeout 5000\n"
                               "write 0 0xc 1 4\n"
                               "write 0 0x8 0 4\n"
                               "wait-irq 0 --timeout 200\n");
  EXPECT_EQ(masked.status, 1) << masked.out;
  EXPECT_NE(masked.out.find("no interrupt within 200 ms"), std::string::npos) << masked.out;
}

// A device without DMA logging says so with the kernel's errno, and the
// command's own words are checked before anything is sent.
TEST_F(ProbeDeviceTest, DirtyLogOnADeviceWithoutLoggingIsEnotty) {
  const Output run = Probe(kSource, "dirty-log start 0 64K");
  EXPECT_EQ(run.status, 1) << run.out;
  EXPECT_NE(run.out.find("dirty-log: start at 0x0 size 0x10000"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("ENOTTY"), std::string::npos) << run.out;
  for (const char* bad : {"dirty-log", "dirty-log go 0 4K", "dirty-log report 0 0",
                          "dirty-log start 0 4K --page-size 3000", "dirty-log stop 1"}) {
    const Output usage = Probe(kSource, bad);
    EXPECT_EQ(usage.status, 2) << bad << ": " << usage.out;
  }
}

TEST_F(ProbeDeviceTest, WaitIrqWithoutAnInterruptTimesOut) {
  const Output run = Probe(kSource, "wait-irq 0 --timeout 50");
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.out.find("no interrupt within 50 ms"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("ETIMEDOUT"), std::string::npos) << run.out;
}

// Both kinds of guest memory: a shared memfd the daemon maps, and memory only
// the probe can reach, which the device reads and writes with DMA_READ/WRITE.
TEST_F(ProbeDeviceTest, DeviceDmaReachesTheProbesMemoryBothWays) {
  // A fresh instance each: an interrupt left asserted by the first run would
  // be seen by the second's wait-irq.
  const std::pair<const char*, std::string> runs[] = {{kSource, "map-memory 64K"},
                                                      {kTarget, "map-memory 64K --no-fd"}};
  for (const auto& [uuid, map] : runs) {
    SCOPED_TRACE(map);
    const Output run = Script(uuid,
                              map + "\n"
                              "mem-write 0x100 01:02:03:04:05:06:07:08\n"
                              "arm-irq 0\n"
                              "write 0 0x10 0x100 4\n"
                              "write 0 0x14 0 4\n"
                              "write 0 0x18 8 4\n"
                              "write 0 0x1c 0x101 4\n"
                              "wait-irq 0 --timeout 5000\n"
                              "read 0 0x20 4\n"
                              "read 0 0x800 8\n"
                              "write 0 0xc 1 4\n"
                              "unmask-irq 0\n"
                              "write 0 0x10 0x2000 4\n"
                              "write 0 0x1c 0x102 4\n"
                              "wait-irq 0 --timeout 5000\n"
                              "mem-read 0x2000 8\n");
    ASSERT_EQ(run.status, 0) << run.out;
    EXPECT_NE(run.out.find("0x00000002\n0x0807060504030201\n"), std::string::npos) << run.out;
    EXPECT_NE(run.out.find("00002000: 01 02 03 04 05 06 07 08\n"), std::string::npos) << run.out;
  }
}

TEST_F(ProbeDeviceTest, SaveAndResumeMoveTheDeviceStateToAnotherInstance) {
  const Output setup = Script(kSource,
                              "write 0 0x4 0xc0ffee 4\n"
                              "write 0 0x800 0x1122334455667788 8\n"
                              "write 1 0x3 0x5a 1\n");
  ASSERT_EQ(setup.status, 0) << setup.out;
  const std::string file = (dir_ / "state.bin").string();
  const Output saved = Probe(kSource, "save " + file);
  ASSERT_EQ(saved.status, 0) << saved.out;
  EXPECT_NE(saved.out.find("saved "), std::string::npos) << saved.out;
  const Output resumed = Probe(kTarget, "resume " + file);
  ASSERT_EQ(resumed.status, 0) << resumed.out;
  const Output read = Script(kTarget, "read 0 0x4 4\nread 0 0x800 8\nread 1 0x3 1\n");
  ASSERT_EQ(read.status, 0) << read.out;
  EXPECT_EQ(read.out, "0x00c0ffee\n0x1122334455667788\n0x5a\n");
}

TEST_F(ProbeDeviceTest, ACorruptStreamIsRefusedAndTheTargetStaysUsable) {
  const std::string file = (dir_ / "state.bin").string();
  ASSERT_EQ(Probe(kSource, "save " + file).status, 0);
  {
    std::fstream stream(file, std::ios::in | std::ios::out | std::ios::binary);
    stream.seekp(0);
    stream.put('X');  // The magic.
  }
  const Output resumed = Probe(kTarget, "resume " + file);
  EXPECT_EQ(resumed.status, 1);
  EXPECT_NE(resumed.out.find("EINVAL"), std::string::npos) << resumed.out;
  // Reset leaves ERROR; the device answers again.
  const Output after = Script(kTarget, "reset\nread 0 0x0 4\n");
  ASSERT_EQ(after.status, 0) << after.out;
  EXPECT_EQ(after.out, "0x756d6476\n");
}

}  // namespace
