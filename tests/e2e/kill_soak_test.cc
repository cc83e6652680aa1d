// Kills, repeated: QEMU SIGKILLed while a gpu COPY pins its RAM, a migration
// client SIGKILLed mid-stream, and umdevd SIGKILLed while definitions are
// written. After each: no locked memory or descriptor is left behind, the
// device attaches again, definitions are intact, stale sockets and the stale
// FUSE mount are gone and autostart works. UMDEV_SOAK_ROUNDS sets the rounds
// (3 by default; `make soak` runs 100).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "e2e/qemu_qtest.h"
#include "e2e/umdevd_process.h"
#include "umdev/common/uuid.h"
#include "umdev/vendor/gpu/gpu_regs.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;
using namespace umdev::vendor::gpu::regs;  // NOLINT: the device's programming model.

constexpr uint8_t kSlot = 4;
constexpr uint64_t kBar0 = 0xe0000000;
constexpr uint64_t kBar2 = 0xe1000000;  // 16 MiB, aligned to its size.
constexpr uint64_t kRing = 0x400000;
constexpr uint64_t kData = 0x1000000;  // 16 MiB of guest RAM the COPYs read.
constexpr uint64_t kFence = 0x600000;

int Rounds() {
  const char* text = std::getenv("UMDEV_SOAK_ROUNDS");
  const int rounds = text != nullptr ? std::atoi(text) : 0;
  return rounds > 0 ? rounds : 3;
}

// A field of /proc/PID/status in kB ("VmLck"), or -1.
long StatusKb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

size_t FdCount(pid_t pid) {
  size_t count = 0;
  std::error_code error;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", error);
       it != fs::directory_iterator(); ++it) {
    ++count;
  }
  return count;
}

// Waits until the daemon's locked memory is back at the given baseline and
// its descriptors at most there (a control connection of the umdevctl that
// set the device up may still have been open when the baseline was taken);
// true if they are within 20 s.
bool BackToBaseline(pid_t pid, long locked_kb, size_t fds) {
  for (int i = 0; i < 2000; ++i) {
    if (StatusKb(pid, "VmLck") == locked_kb && FdCount(pid) <= fds) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

class KillSoakTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto root = QemuRootFromEnvironment();
    if (!root) GTEST_SKIP() << "UMDEV_QEMU_ROOT is not set: run 'make test'";
    root_ = *root;
    auto scratch = RootScratchDir::Create(root_);
    ASSERT_TRUE(scratch.has_value()) << scratch.error().Describe();
    scratch_.emplace(std::move(*scratch));
  }
  void TearDown() override {
    qemu_.reset();
    if (daemon_ && HasFailure()) std::cerr << "umdevd log:\n" << daemon_->Log();
    daemon_.reset();
    scratch_.reset();
  }

  void StartDaemon(const std::string& config, const std::vector<std::string>& args = {}) {
    auto daemon = UmdevdProcess::Start(UMDEVD, scratch_->path(), config, args, "info");
    ASSERT_TRUE(daemon.has_value()) << daemon.error().Describe();
    daemon_.emplace(std::move(*daemon));
  }

  void StartQemu(const std::string& uuid) {
    QemuQtestOptions options;
    options.root = root_;
    options.memory_mib = 64;
    options.shared_memory = true;  // DMA_MAP carries fds: COPY pins guest pages.
    options.devices.push_back(VfioUserPciDevice{daemon_->SocketOf(uuid), "04.0", "gpu"});
    auto qemu = QemuQtest::Start(std::move(options));
    ASSERT_TRUE(qemu.has_value()) << qemu.error().Describe();
    qemu_.emplace(std::move(*qemu));
    ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x10, static_cast<uint32_t>(kBar0)));
    ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x18, static_cast<uint32_t>(kBar2)));
    ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x1c, 0));
    ASSERT_TRUE(qemu_->ConfigWrite16(kSlot, 0, 0x04, 0x0006));
  }

  void SetReg(uint32_t offset, uint32_t value) {
    ASSERT_TRUE(qemu_->Writel(kBar0 + offset, value));
  }

  // Queues |entries| at the start of the ring and rings the doorbell.
  void Submit(const std::vector<RingEntry>& entries) {
    std::vector<uint8_t> bytes(entries.size() * kEntrySize);
    std::memcpy(bytes.data(), entries.data(), bytes.size());
    ASSERT_TRUE(qemu_->MemWrite(kRing, bytes));
    SetReg(kRegQueueBase, static_cast<uint32_t>(kRing));
    SetReg(kRegQueueBase + 4, 0);
    SetReg(kRegQueueSize, 16);
    SetReg(kRegQueueCtrl, kQueueEnable);
    SetReg(kRegQueueTail, static_cast<uint32_t>(entries.size()));
    SetReg(kRegDoorbell, 1);
  }

  // UUID -> "start" ("auto", "manual", or "" for a running device) from
  // umdevctl's mdevctl-format JSON: [{PARENT: [{UUID: {...}}, ...]}, ...].
  std::map<std::string, std::string> Devices(const std::string& command) {
    std::map<std::string, std::string> devices;
    auto out = daemon_->Ctl(UMDEVCTL, command);
    EXPECT_TRUE(out.has_value()) << command << ": " << out.error().Describe();
    if (!out.has_value()) return devices;
    const auto json = nlohmann::json::parse(*out, nullptr, false);
    if (!json.is_array()) return devices;
    for (const auto& parent : json) {
      for (const auto& [name, list] : parent.items()) {
        for (const auto& device : list) {
          for (const auto& [device_uuid, body] : device.items()) {
            std::string start;
            if (body.is_object()) {
              const auto found = body.find("start");
              if (found != body.end() && found->is_string()) start = found->get<std::string>();
            }
            devices[device_uuid] = start;
          }
        }
      }
    }
    return devices;
  }

  fs::path root_;
  std::optional<RootScratchDir> scratch_;
  std::optional<UmdevdProcess> daemon_;
  std::optional<QemuQtest> qemu_;
};

TEST_F(KillSoakTest, QemuKilledMidDmaLeavesNothingPinnedAndTheSliceAttachesAgain) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(
      R"({"parents":[{"driver":"gpu","engine":"cpu","name":"gpu0","memory":"64M"}]})"));
  const std::string uuid = Uuid::Generate().ToString();
  ASSERT_TRUE(daemon_->Ctl(UMDEVCTL, "start -p gpu0 -t gpu-1of4 -u " + uuid).has_value());
  const pid_t pid = daemon_->pid();
  const long locked = StatusKb(pid, "VmLck");
  const size_t fds = FdCount(pid);
  std::mt19937 random(42);
  for (int round = 0; round < Rounds(); ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    ASSERT_NO_FATAL_FAILURE(StartQemu(uuid));
    // Fifteen 1 MiB COPYs from guest RAM: pins taken block by block.
    std::vector<RingEntry> copies;
    for (uint64_t i = 0; i < 15; ++i) {
      copies.push_back(RingEntry().U32(kEntryOpcode, kOpCopy).U32(kEntryFlags, kCopySrcGuest)
                           .U64(kCopySrc, kData + (i % 8) * (1u << 20))
                           .U64(kCopyDst, (i % 8) * (1u << 20)).U64(kCopySize, 1u << 20));
    }
    ASSERT_NO_FATAL_FAILURE(Submit(copies));
    std::this_thread::sleep_for(std::chrono::milliseconds(random() % 40));
    ASSERT_TRUE(qemu_->Kill(SIGKILL));
    ASSERT_TRUE(qemu_->WaitExit());
    qemu_.reset();
    ASSERT_TRUE(BackToBaseline(pid, locked, fds))
        << "VmLck " << StatusKb(pid, "VmLck") << " kB (was " << locked << "), fds "
        << FdCount(pid) << " (were " << fds << ")";
    ASSERT_TRUE(daemon_->running());
  }
  // The slice serves a fresh QEMU: FILL, COPY to guest RAM and a fence.
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid));
  ASSERT_NO_FATAL_FAILURE(Submit({
      RingEntry().U32(kEntryOpcode, kOpFill).U64(kFillOffset, 0).U64(kFillSize, 4096)
          .U32(kFillPattern, 0x5a5a5a5a),
      RingEntry().U32(kEntryOpcode, kOpCopy).U32(kEntryFlags, kCopyDstGuest).U64(kCopySrc, 0)
          .U64(kCopyDst, kData).U64(kCopySize, 4096),
      RingEntry().U32(kEntryOpcode, kOpFence).U64(kFenceIova, kFence).U64(kFenceValue, 77),
  }));
  bool fenced = false;
  for (int i = 0; i < 2000 && !fenced; ++i) {
    fenced = qemu_->Readq(kFence).value_or(0) == 77;
    if (!fenced) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(fenced) << "ERROR_CODE " << qemu_->Readl(kBar0 + kRegErrorCode).value_or(0);
  EXPECT_EQ(qemu_->Readl(kData).value_or(0), 0x5a5a5a5au);
}

TEST_F(KillSoakTest, MigrationClientKilledMidStreamLeavesTheDeviceServing) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(
      R"({"parents":[{"driver":"gpu","engine":"cpu","name":"gpu0","memory":"64M"}]})"));
  const std::string uuid = Uuid::Generate().ToString();
  ASSERT_TRUE(daemon_->Ctl(UMDEVCTL, "start -p gpu0 -t gpu-1of2 -u " + uuid).has_value());
  const pid_t pid = daemon_->pid();
  const long locked = StatusKb(pid, "VmLck");
  const size_t fds = FdCount(pid);
  const std::string socket = daemon_->SocketOf(uuid).string();
  const fs::path image = scratch_->path() / "slice.img";
  std::mt19937 random(7);
  for (int round = 0; round < Rounds(); ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    // A save of a 32 MiB slice, killed at a random point of its stream.
    const pid_t probe = ::fork();
    ASSERT_GE(probe, 0);
    if (probe == 0) {
      ::execl(UMDEV_PROBE, UMDEV_PROBE, "--socket", socket.c_str(), "save", image.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + random() % 60));
    ::kill(probe, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(probe, &status, 0), probe);
    ASSERT_TRUE(BackToBaseline(pid, locked, fds))
        << "VmLck " << StatusKb(pid, "VmLck") << " kB (was " << locked << "), fds "
        << FdCount(pid) << " (were " << fds << ")";
  }
  // A whole save then works: the device went back to RUNNING for the next client.
  const auto saved = RunShell(std::string(UMDEV_PROBE) + " --socket " + socket + " save " +
                              image.string() + " 2>&1");
  EXPECT_EQ(saved.status, 0) << saved.out;
  EXPECT_GT(fs::file_size(image), 32u << 20);
  EXPECT_TRUE(daemon_->running());
}

// Every definition file parses and names its type: none was left half written.
void ExpectDefinitionsIntact(const fs::path& dir) {
  std::error_code error;
  for (const auto& entry : fs::recursive_directory_iterator(dir, error)) {
    if (!entry.is_regular_file() || entry.path().extension() == ".tmp") continue;
    std::ifstream in(entry.path());
    const auto json = nlohmann::json::parse(in, nullptr, false);
    ASSERT_FALSE(json.is_discarded()) << entry.path();
    EXPECT_TRUE(json.contains("mdev_type")) << entry.path();
  }
}

TEST_F(KillSoakTest, UmdevdKilledWhileDefiningRestartsCleanly) {
  const std::string config = R"({"parents":[{"driver":"mtty"}]})";
  const fs::path mount = scratch_->path() / "sys";
  const std::vector<std::string> args = {"--sysfs-mount", mount.string()};
  ASSERT_NO_FATAL_FAILURE(StartDaemon(config, args));
  std::mt19937 random(3);
  for (int round = 0; round < Rounds(); ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    // Definitions, edits and starts race the kill.
    const std::string ctl = std::string(UMDEVCTL) + " --state-dir " + daemon_->state_dir().string();
    const std::string script =
        "for i in 1 2 3 4 5 6 7 8; do u=$(cat /proc/sys/kernel/random/uuid); " + ctl +
        " define -u $u -p mtty -t mtty-1 --auto; " + ctl + " modify -u $u --manual; " + ctl +
        " modify -u $u --auto; " + ctl + " start -u $u; done >/dev/null 2>&1";
    const pid_t writer = ::fork();
    ASSERT_GE(writer, 0);
    if (writer == 0) {
      ::execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + random() % 250));
    ASSERT_EQ(::kill(daemon_->pid(), SIGKILL), 0);
    int status = 0;
    ::waitpid(writer, &status, 0);
    daemon_.reset();  // Reaps the killed daemon.
    // The harness waits for control.sock to appear; the dead daemon's is
    // still there (the next daemon replaces it as it starts).
    fs::remove(scratch_->path() / "state" / "control.sock");

    // The next daemon starts on the same state: lock, sockets, mount.
    ASSERT_NO_FATAL_FAILURE(StartDaemon(config, args));
    ASSERT_NO_FATAL_FAILURE(ExpectDefinitionsIntact(daemon_->state_dir() / "mdevctl.d"));
    for (const auto& entry : fs::recursive_directory_iterator(daemon_->state_dir() / "mdevctl.d")) {
      EXPECT_NE(entry.path().extension(), ".tmp") << "a half-written definition was left";
    }
    // Every definition marked auto is running, and only live devices have sockets.
    const auto defined = Devices("list -d --dumpjson");
    const auto live = Devices("list --dumpjson");
    for (const auto& [device_uuid, start] : defined) {
      if (start == "auto") {
        EXPECT_TRUE(live.contains(device_uuid)) << device_uuid << " was not autostarted";
      }
    }
    for (const auto& entry : fs::directory_iterator(daemon_->state_dir() / "vfio-user")) {
      EXPECT_TRUE(live.contains(entry.path().stem().string())) << "stale socket " << entry.path();
    }
    // The FUSE tree is the new daemon's, and answers.
    EXPECT_TRUE(fs::exists(mount / "class" / "mdev_bus" / "mtty"));
    // Room for the next round: the parent has 24 ports.
    for (const auto& [device_uuid, start] : live) (void)daemon_->Ctl(UMDEVCTL, "stop -u " + device_uuid);
    for (const auto& [device_uuid, start] : defined) {
      (void)daemon_->Ctl(UMDEVCTL, "undefine -u " + device_uuid);
    }
  }
}

}  // namespace
}  // namespace umdev::test
