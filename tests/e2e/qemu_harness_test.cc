// The qtest harness against plain QEMU (no vfio-user device): every helper the
// end-to-end tests rely on, and the failures they must be able to tell apart.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <vector>

#include "e2e/qemu_qtest.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr uint8_t kLpcSlot = 0x1f;  // ICH9 LPC bridge on q35
constexpr uint8_t kEmptySlot = 4;

class QemuHarnessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto root = QemuRootFromEnvironment();
    if (!root) {
      GTEST_SKIP() << "UMDEV_QEMU_ROOT is not set: run 'make test', which builds the QEMU "
                      "root (scripts/qemu-root) and points the tests at it";
    }
    root_ = *root;
  }

  QemuQtestOptions Options() const {
    QemuQtestOptions options;
    options.root = root_;
    options.memory_mib = 64;
    return options;
  }

  // Starts QEMU or fails the test with QEMU's own words.
  void StartQemu(QemuQtestOptions options) {
    auto started = QemuQtest::Start(std::move(options));
    ASSERT_TRUE(started.has_value()) << started.error().Describe();
    qemu_ = std::move(*started);
  }

  fs::path root_;
  std::optional<QemuQtest> qemu_;
};

TEST_F(QemuHarnessTest, ReadsTheQ35HostBridgeIdentityThroughCf8Cfc) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  EXPECT_EQ(qemu_->ConfigRead32(0, 0, 0), 0x29c08086u);
  EXPECT_EQ(qemu_->ConfigRead16(0, 0, 0), 0x8086);
  EXPECT_EQ(qemu_->ConfigRead16(0, 0, 2), 0x29c0);
  EXPECT_EQ(qemu_->ConfigRead8(0, 0, 1), 0x80);
  EXPECT_EQ(qemu_->ConfigRead8(0, 0, 3), 0x29);
}

TEST_F(QemuHarnessTest, AnEmptySlotReadsAllOnes) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  EXPECT_EQ(qemu_->ConfigRead32(kEmptySlot, 0, 0), 0xffffffffu);
}

TEST_F(QemuHarnessTest, ConfigWritesReachTheDevice) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  ASSERT_TRUE(qemu_->ConfigWrite16(kLpcSlot, 0, 0x04, 0x0007).has_value());
  EXPECT_EQ(qemu_->ConfigRead16(kLpcSlot, 0, 0x04), 0x0007);
  ASSERT_TRUE(qemu_->ConfigWrite8(kLpcSlot, 0, 0x04, 0x03).has_value());
  EXPECT_EQ(qemu_->ConfigRead8(kLpcSlot, 0, 0x04), 0x03);
  ASSERT_TRUE(qemu_->ConfigWrite32(kLpcSlot, 0, 0x04, 0x0001).has_value());
  EXPECT_EQ(qemu_->ConfigRead16(kLpcSlot, 0, 0x04), 0x0001);
}

TEST_F(QemuHarnessTest, MisalignedOrOutOfRangeConfigAccessIsEinval) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  EXPECT_EQ(qemu_->ConfigRead32(0, 0, 2).error().code, EINVAL);
  EXPECT_EQ(qemu_->ConfigRead16(0, 0, 1).error().code, EINVAL);
  EXPECT_EQ(qemu_->ConfigRead8(32, 0, 0).error().code, EINVAL);
  EXPECT_EQ(qemu_->ConfigWrite8(0, 8, 0, 0).error().code, EINVAL);
}

class QemuMemoryTest : public QemuHarnessTest, public ::testing::WithParamInterface<bool> {};

TEST_P(QemuMemoryTest, MemWriteThenMemReadRoundTripsAcrossChunks) {
  QemuQtestOptions options = Options();
  options.shared_memory = GetParam();
  ASSERT_NO_FATAL_FAILURE(StartQemu(std::move(options)));
  // Larger than one qtest line's chunk, and starting off a page boundary.
  std::vector<uint8_t> bytes(100'003);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + i / 251);
  constexpr uint64_t kAddr = 0x100123;
  ASSERT_TRUE(qemu_->MemWrite(kAddr, bytes).has_value());
  auto read = qemu_->MemRead(kAddr, bytes.size());
  ASSERT_TRUE(read.has_value()) << read.error().Describe();
  EXPECT_EQ(*read, bytes);
  EXPECT_EQ(qemu_->Readb(kAddr + 5), bytes[5]);
}

INSTANTIATE_TEST_SUITE_P(SharedAndPrivateRam, QemuMemoryTest, ::testing::Bool(),
                         [](const auto& param_info) {
                           return param_info.param ? "Shared" : "Private";
                         });

TEST_F(QemuHarnessTest, WriteqThenReadqAndNarrowerReadsAreLittleEndian) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  ASSERT_TRUE(qemu_->Writeq(0x2000, 0x1122334455667788).has_value());
  EXPECT_EQ(qemu_->Readq(0x2000), 0x1122334455667788u);
  EXPECT_EQ(qemu_->Readl(0x2000), 0x55667788u);
  EXPECT_EQ(qemu_->Readw(0x2006), 0x1122);
  EXPECT_EQ(qemu_->Readb(0x2001), 0x77);
  ASSERT_TRUE(qemu_->Writel(0x2000, 0xdeadbeef).has_value());
  ASSERT_TRUE(qemu_->Writew(0x2004, 0xcafe).has_value());
  ASSERT_TRUE(qemu_->Writeb(0x2007, 0x5a).has_value());
  EXPECT_EQ(qemu_->Readq(0x2000), 0x5a22cafedeadbeefu);
  EXPECT_EQ(qemu_->MemRead(0x2000, 4), (std::vector<uint8_t>{0xef, 0xbe, 0xad, 0xde}));
}

TEST_F(QemuHarnessTest, EmptyMemReadIsEinvalAndEmptyMemWriteIsANoOp) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  EXPECT_EQ(qemu_->MemRead(0x1000, 0).error().code, EINVAL);
  EXPECT_TRUE(qemu_->MemWrite(0x1000, {}).has_value());
  EXPECT_TRUE(qemu_->Readb(0x1000).has_value());  // QEMU is still answering
}

TEST_F(QemuHarnessTest, PortIoReachesDevices) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  // The RTC's index/data pair: CMOS byte 0x30 is plain storage.
  ASSERT_TRUE(qemu_->Outb(0x70, 0x30).has_value());
  ASSERT_TRUE(qemu_->Outb(0x71, 0xa5).has_value());
  ASSERT_TRUE(qemu_->Outb(0x70, 0x30).has_value());
  EXPECT_EQ(qemu_->Inb(0x71), 0xa5);
  ASSERT_TRUE(qemu_->Outl(0xcf8, 0x80000000).has_value());
  EXPECT_EQ(qemu_->Inl(0xcfc), 0x29c08086u);
  EXPECT_EQ(qemu_->Inw(0xcfe), 0x29c0);
}

TEST_F(QemuHarnessTest, InterceptedIoapicReportsTheTimerInterrupt) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  ASSERT_TRUE(qemu_->IrqInterceptIn("ioapic").has_value());
  EXPECT_FALSE(qemu_->IrqLevel(0));
  // PIT channel 0, rate generator, count 0x1000: a periodic pulse on ISA IRQ 0.
  ASSERT_TRUE(qemu_->Outb(0x43, 0x34).has_value());
  ASSERT_TRUE(qemu_->Outb(0x40, 0x00).has_value());
  ASSERT_TRUE(qemu_->Outb(0x40, 0x10).has_value());
  // Each clock step runs the timer to its next deadline; the raise may arrive
  // before the step's reply (recorded while reading it) or after.
  for (int step = 0; step < 16 && qemu_->IrqRaiseCount(0) == 0; ++step) {
    ASSERT_TRUE(qemu_->ClockStep().has_value());
  }
  ASSERT_TRUE(qemu_->WaitIrq(0, true, std::chrono::seconds(5)).has_value());
  EXPECT_GE(qemu_->IrqRaiseCount(0), 1);
  EXPECT_TRUE(qemu_->IrqLevel(0));
}

TEST_F(QemuHarnessTest, WaitIrqTimesOutWhenNothingHappens) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  ASSERT_TRUE(qemu_->IrqInterceptIn("ioapic").has_value());
  auto waited = qemu_->WaitIrq(11, true, std::chrono::milliseconds(200));
  ASSERT_FALSE(waited.has_value());
  EXPECT_EQ(waited.error().code, ETIMEDOUT);
  EXPECT_TRUE(qemu_->Readb(0).has_value());
}

TEST_F(QemuHarnessTest, InterceptingAnUnknownDeviceFails) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  auto intercepted = qemu_->IrqInterceptIn("no-such-device");
  ASSERT_FALSE(intercepted.has_value());
  EXPECT_EQ(intercepted.error().code, EIO);
  EXPECT_THAT(intercepted.error().context, HasSubstr("Unknown device"));
}

TEST_F(QemuHarnessTest, AnUnknownCommandFailsAndQemuKeepsAnswering) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  auto reply = qemu_->Command("frobnicate 1 2");
  ASSERT_FALSE(reply.has_value());
  EXPECT_EQ(reply.error().code, EIO);
  EXPECT_THAT(reply.error().context, HasSubstr("Unknown command 'frobnicate'"));
  EXPECT_EQ(qemu_->Command("endianness"), "little");
  EXPECT_EQ(qemu_->Command("two\nlines").error().code, EINVAL);
}

TEST_F(QemuHarnessTest, SigkillIsReportedToTheNextCommandAndTheExitStatus) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  ASSERT_GT(qemu_->pid(), 0);
  ASSERT_TRUE(qemu_->Kill(SIGKILL).has_value());
  auto read = qemu_->Readl(0);
  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(read.error().code, EPIPE);
  EXPECT_THAT(read.error().context, HasSubstr("killed by signal 9"));
  auto status = qemu_->WaitExit();
  ASSERT_TRUE(status.has_value()) << status.error().Describe();
  EXPECT_TRUE(WIFSIGNALED(*status));
  EXPECT_EQ(WTERMSIG(*status), SIGKILL);
  EXPECT_EQ(qemu_->exit_status(), *status);
  EXPECT_EQ(qemu_->Kill(SIGKILL).error().code, ESRCH);
}

TEST_F(QemuHarnessTest, QuitEndsQemuCleanly) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  auto status = qemu_->Quit();
  ASSERT_TRUE(status.has_value()) << status.error().Describe();
  EXPECT_TRUE(WIFEXITED(*status)) << *status;
  EXPECT_EQ(WEXITSTATUS(*status), 0);
  EXPECT_EQ(qemu_->Quit(), *status);
}

TEST_F(QemuHarnessTest, DestructionKillsAndReapsQemu) {
  ASSERT_NO_FATAL_FAILURE(StartQemu(Options()));
  const pid_t pid = qemu_->pid();
  qemu_.reset();
  // Reaped, so not even a zombie is left to signal.
  EXPECT_EQ(kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST_F(QemuHarnessTest, ASocketOutsideTheRootIsEinval) {
  QemuQtestOptions options = Options();
  options.devices.push_back({.socket = fs::temp_directory_path() / "umdev-outside.sock"});
  auto started = QemuQtest::Start(std::move(options));
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, EINVAL);
}

TEST_F(QemuHarnessTest, PathInsideRootTranslatesAndRejectsEscapes) {
  EXPECT_EQ(PathInsideRoot(root_, root_ / "tmp" / "d" / "dev.sock"), "/tmp/d/dev.sock");
  EXPECT_EQ(PathInsideRoot(root_, root_ / "tmp" / ".." / "tmp" / "x"), "/tmp/x");
  EXPECT_EQ(PathInsideRoot(root_, root_).error().code, EINVAL);
  EXPECT_EQ(PathInsideRoot(root_, root_ / ".." / "elsewhere").error().code, EINVAL);
  EXPECT_EQ(PathInsideRoot(root_, "/").error().code, EINVAL);
}

TEST_F(QemuHarnessTest, ARealizeFailureCarriesQemusMessage) {
  auto scratch = RootScratchDir::Create(root_);
  ASSERT_TRUE(scratch.has_value()) << scratch.error().Describe();
  QemuQtestOptions options = Options();
  options.devices.push_back({.socket = scratch->path() / "nobody-listens.sock"});
  auto started = QemuQtest::Start(std::move(options));
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, EPIPE);
  EXPECT_THAT(started.error().context, HasSubstr("Failed to connect"));
  EXPECT_THAT(started.error().context, HasSubstr("exited with status 1"));
}

TEST_F(QemuHarnessTest, ExtraArgumentsReachQemu) {
  QemuQtestOptions options = Options();
  options.extra_args = {"-no-such-option"};
  auto started = QemuQtest::Start(std::move(options));
  ASSERT_FALSE(started.has_value());
  EXPECT_THAT(started.error().context, HasSubstr("-no-such-option"));
}

TEST_F(QemuHarnessTest, ARootWithoutQemuIsEnoent) {
  auto scratch = RootScratchDir::Create(root_);
  ASSERT_TRUE(scratch.has_value());
  QemuQtestOptions options = Options();
  options.root = scratch->path();
  auto started = QemuQtest::Start(std::move(options));
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, ENOENT);
}

TEST_F(QemuHarnessTest, ScratchDirIsUnderTheRootAndRemovedWithItsContents) {
  fs::path path;
  {
    auto scratch = RootScratchDir::Create(root_);
    ASSERT_TRUE(scratch.has_value());
    path = scratch->path();
    std::ofstream(path / "file") << "x";
    EXPECT_TRUE(PathInsideRoot(root_, path / "file").has_value());
  }
  EXPECT_FALSE(fs::exists(path));
}

}  // namespace
}  // namespace umdev::test
