// Real QEMU (vfio-user-pci under qtest) driving a gpu slice of a real umdevd
// the way a guest driver would: a command ring and data in guest RAM, the
// kernel and its arguments stored through the mmapped BAR2, a doorbell, and
// the results, the fence value and the MSI-X messages read back.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "e2e/qemu_qtest.h"
#include "e2e/umdevd_process.h"
#include "umdev/common/uuid.h"
#include "umdev/vendor/gpu/builtin_kernels.h"
#include "umdev/vendor/gpu/gpu_regs.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;
using namespace umdev::vendor::gpu::regs;  // NOLINT: the device's programming model.

constexpr uint8_t kSlot = 4;
constexpr uint64_t kBar0 = 0xe0000000;
constexpr uint64_t kBar2 = 0xe0200000;   // 2 MiB: the 1of8 slice of a 16 MiB parent.
constexpr uint64_t kBar4 = 0xe0400000;   // The doorbell page.
constexpr uint64_t kRing = 0x400000;     // Guest RAM.
constexpr uint64_t kData = 0x500000;
constexpr uint64_t kFence = 0x600000;
constexpr uint64_t kMsiTarget = 0x300000;
constexpr uint32_t kCount = 1000;

struct Setup {
  const char* name;
  const char* parent;  // The gpu parent's config entry.
  bool shared_memory;  // false: every guest access is a DMA message.
};

class GpuQemuTest : public ::testing::TestWithParam<Setup> {
 protected:
  void SetUp() override {
    const auto root = QemuRootFromEnvironment();
    if (!root) GTEST_SKIP() << "UMDEV_QEMU_ROOT is not set: run 'make test'";
    auto scratch = RootScratchDir::Create(*root);
    ASSERT_TRUE(scratch.has_value()) << scratch.error().Describe();
    scratch_.emplace(std::move(*scratch));
    auto daemon = UmdevdProcess::Start(
        UMDEVD, scratch_->path(),
        std::string(R"({"parents":[)") + GetParam().parent + "]}");
    if (!daemon.has_value() && std::string(GetParam().name) == "Vulkan") {
      GTEST_SKIP() << "no Vulkan device for the gpu parent: " << daemon.error().Describe();
    }
    ASSERT_TRUE(daemon.has_value()) << daemon.error().Describe();
    daemon_.emplace(std::move(*daemon));
    uuid_ = Uuid::Generate().ToString();
    auto out = daemon_->Ctl(UMDEVCTL, "start -p gpu0 -t gpu-1of8 -u " + uuid_);
    ASSERT_TRUE(out.has_value()) << out.error().Describe();

    QemuQtestOptions options;
    options.root = *root;
    options.shared_memory = GetParam().shared_memory;
    options.devices.push_back(VfioUserPciDevice{daemon_->SocketOf(uuid_), "04.0", "gpu"});
    auto qemu = QemuQtest::Start(std::move(options));
    ASSERT_TRUE(qemu.has_value()) << qemu.error().Describe();
    qemu_.emplace(std::move(*qemu));

    // What firmware and the guest driver's probe would do: place the BARs,
    // enable memory and bus mastering, program MSI-X vectors 0 and 1.
    ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x10, static_cast<uint32_t>(kBar0)));
    ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x18, static_cast<uint32_t>(kBar2)));
    ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x1c, 0));
    ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x20, static_cast<uint32_t>(kBar4)));
    ASSERT_TRUE(qemu_->ConfigWrite16(kSlot, 0, 0x04, 0x0006));
    const uint8_t msix = FindCapability(0x11);
    ASSERT_NE(msix, 0);
    for (uint32_t vector = 0; vector < 2; ++vector) {
      const uint64_t entry = kBar0 + kMsixTableOffset + vector * 16;
      ASSERT_TRUE(qemu_->Writel(entry + 0, static_cast<uint32_t>(kMsiTarget + vector * 0x40)));
      ASSERT_TRUE(qemu_->Writel(entry + 4, 0));
      ASSERT_TRUE(qemu_->Writel(entry + 8, 0xa0 + vector));
      ASSERT_TRUE(qemu_->Writel(entry + 12, 0));
    }
    ASSERT_TRUE(qemu_->ConfigWrite16(kSlot, 0, msix + 2, 0x8000));
  }

  void TearDown() override {
    qemu_.reset();
    if (daemon_ && HasFailure()) std::cerr << "umdevd log:\n" << daemon_->Log();
    daemon_.reset();
    scratch_.reset();
  }

  uint8_t FindCapability(uint8_t id) {
    uint8_t at = qemu_->ConfigRead8(kSlot, 0, 0x34).value_or(0);
    for (int guard = 0; at != 0 && guard < 48; ++guard) {
      if (qemu_->ConfigRead8(kSlot, 0, at).value_or(0) == id) return at;
      at = qemu_->ConfigRead8(kSlot, 0, at + 1).value_or(0);
    }
    return 0;
  }
  uint32_t Reg(uint32_t offset) { return qemu_->Readl(kBar0 + offset).value_or(0xdeadbeef); }
  void SetReg(uint32_t offset, uint32_t value) {
    ASSERT_TRUE(qemu_->Writel(kBar0 + offset, value));
  }
  void Write(uint64_t addr, const void* data, size_t size) {
    std::vector<uint8_t> bytes(size);
    std::memcpy(bytes.data(), data, size);
    ASSERT_TRUE(qemu_->MemWrite(addr, bytes));
  }
  // Polls guest RAM until the 32-bit word at |addr| is |value| (the device
  // works on its own threads, outside QEMU's virtual time).
  bool WaitWord(uint64_t addr, uint32_t value) {
    for (int i = 0; i < 2000; ++i) {
      if (qemu_->Readl(addr).value_or(0) == value) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  std::optional<RootScratchDir> scratch_;
  std::optional<UmdevdProcess> daemon_;
  std::optional<QemuQtest> qemu_;
  std::string uuid_;
};

using Entry = RingEntry;

TEST_P(GpuQemuTest, VectorAddThroughTheRingWithFenceAndMsix) {
  EXPECT_EQ(qemu_->ConfigRead16(kSlot, 0, 0x00), kDefaultVendorId);
  EXPECT_EQ(qemu_->ConfigRead8(kSlot, 0, 0x0b), kClassAccelerator);
  ASSERT_EQ(Reg(kRegId), kIdValue);
  EXPECT_EQ(Reg(kRegMemSize), 2u << 20);
  EXPECT_EQ(Reg(kRegComputeShare), 125u);

  // Inputs in guest RAM.
  std::vector<uint32_t> a(kCount), b(kCount);
  for (uint32_t i = 0; i < kCount; ++i) {
    a[i] = i * 3;
    b[i] = 0x10000 + i;
  }
  Write(kData, a.data(), 4 * kCount);
  Write(kData + 0x1000, b.data(), 4 * kCount);
  // The kernel, its name and its arguments stored straight into BAR2.
  const auto* kernel = vendor::gpu::FindBuiltinKernel("umdev_vadd_u32");
  ASSERT_NE(kernel, nullptr);
  Write(kBar2, kernel->spirv.data(), kernel->spirv.size_bytes());
  const char name[] = "umdev_vadd_u32";
  Write(kBar2 + 0x8000, name, sizeof(name));
  struct {
    uint32_t groups[3] = {(kCount + 63) / 64, 1, 1};
    uint32_t binding_count = 3, push_size = 4, reserved = 0;
    struct { uint32_t binding, reserved; uint64_t offset, size; } bindings[3] = {
        {0, 0, 0x10000, 4096}, {1, 0, 0x20000, 4096}, {2, 0, 0x30000, 4096}};
    uint32_t count = kCount;
  } args;
  static_assert(sizeof(args) == kArgsHeaderSize + 3 * kArgsBindingSize + 8);
  Write(kBar2 + 0x8100, &args, kArgsHeaderSize + 3 * kArgsBindingSize + 4);
  // BAR2 is the slice: what was stored reads back (through QEMU's mapping).
  uint32_t name_word = 0;
  std::memcpy(&name_word, name, 4);
  EXPECT_EQ(qemu_->Readl(kBar2 + 0x8000), name_word);

  const Entry ring[] = {
      Entry().U32(kEntryOpcode, kOpCopy).U32(kEntryFlags, kCopySrcGuest).U64(kCopySrc, kData)
          .U64(kCopyDst, 0x10000).U64(kCopySize, 4 * kCount),
      Entry().U32(kEntryOpcode, kOpCopy).U32(kEntryFlags, kCopySrcGuest)
          .U64(kCopySrc, kData + 0x1000).U64(kCopyDst, 0x20000).U64(kCopySize, 4 * kCount),
      Entry().U32(kEntryOpcode, kOpDispatch).U64(kDispatchModuleOffset, 0)
          .U32(kDispatchModuleSize, static_cast<uint32_t>(kernel->spirv.size_bytes()))
          .U64(kDispatchEntryOffset, 0x8000).U64(kDispatchArgsOffset, 0x8100),
      Entry().U32(kEntryOpcode, kOpCopy).U32(kEntryFlags, kCopyDstGuest).U64(kCopySrc, 0x30000)
          .U64(kCopyDst, kData + 0x2000).U64(kCopySize, 4 * kCount),
      Entry().U32(kEntryOpcode, kOpFence).U32(kEntryFlags, kFenceInterrupt)
          .U64(kFenceIova, kFence).U64(kFenceValue, 0x1234567890),
  };
  Write(kRing, ring, sizeof(ring));
  SetReg(kRegQueueBase, static_cast<uint32_t>(kRing));
  SetReg(kRegQueueBase + 4, 0);
  SetReg(kRegQueueSize, 16);
  SetReg(kRegQueueCtrl, kQueueEnable);
  SetReg(kRegQueueTail, 5);
  SetReg(kRegDoorbell, 1);

  ASSERT_TRUE(WaitWord(kMsiTarget, 0xa0)) << "no fence MSI-X message; ERROR_CODE "
                                          << Reg(kRegErrorCode);
  EXPECT_EQ(qemu_->Readq(kFence), 0x1234567890u);
  EXPECT_EQ(Reg(kRegQueueHead), 5u);
  EXPECT_EQ(Reg(kRegFenceDone), 0x34567890u);
  EXPECT_EQ(Reg(kRegIntStatus), kIntFence);
  auto c = qemu_->MemRead(kData + 0x2000, 4 * kCount);
  ASSERT_TRUE(c.has_value());
  for (uint32_t i = 0; i < kCount; ++i) {
    uint32_t got;
    std::memcpy(&got, c->data() + 4 * i, 4);
    ASSERT_EQ(got, a[i] + b[i]) << i;
  }

  // A bad entry: the error vector, and the device keeps serving.
  const Entry bad = Entry().U32(kEntryOpcode, kOpFill).U64(kFillOffset, 4 << 20)
                        .U64(kFillSize, 4);
  Write(kRing + 5 * kEntrySize, &bad, sizeof(bad));
  SetReg(kRegQueueTail, 6);
  SetReg(kRegDoorbell, 1);
  ASSERT_TRUE(WaitWord(kMsiTarget + 0x40, 0xa1)) << "no error MSI-X message";
  EXPECT_EQ(Reg(kRegErrorCode), static_cast<uint32_t>(EFAULT));
  EXPECT_EQ(Reg(kRegErrorIndex), 5u);
  auto attrs = daemon_->Ctl(UMDEVCTL, "attr -u " + uuid_ + " -n errors");
  ASSERT_TRUE(attrs.has_value()) << attrs.error().Describe();
  EXPECT_NE(attrs->find('1'), std::string::npos) << *attrs;
}

// The guest's doorbell through QEMU's mapping of BAR4: the tail stored in
// the page, DB_POLLING read back, and the trapped DOORBELL only when it
// reads 0. The first doorbell traps (nothing polls yet); each fence has the
// page polled again (for the parent's 100 ms spin), so the rounds after it
// need no trap, and every fence arrives.
TEST_P(GpuQemuTest, APolledDoorbellNeedsNoTrap) {
  ASSERT_NE(Reg(kRegCaps) & kCapDoorbellPage, 0u);
  constexpr uint32_t kRounds = 12;
  for (uint32_t i = 0; i < 16; ++i) {
    const Entry fence = Entry().U32(kEntryOpcode, kOpFence).U32(kEntryFlags, kFenceInterrupt)
                            .U64(kFenceIova, kFence).U64(kFenceValue, 100 + i);
    Write(kRing + i * kEntrySize, &fence, sizeof(fence));
  }
  SetReg(kRegQueueBase, static_cast<uint32_t>(kRing));
  SetReg(kRegQueueBase + 4, 0);
  SetReg(kRegQueueSize, 16);
  SetReg(kRegQueueCtrl, kQueueEnable | kQueueDoorbellPage);
  ASSERT_EQ(Reg(kRegQueueCtrl), kQueueEnable | kQueueDoorbellPage);
  uint32_t traps = 0;
  for (uint32_t round = 1; round <= kRounds; ++round) {
    ASSERT_TRUE(qemu_->Writel(kMsiTarget, 0));
    ASSERT_TRUE(qemu_->Writel(kBar4 + kDbTail, round));
    if (qemu_->Readl(kBar4 + kDbPolling).value_or(0) == 0) {
      SetReg(kRegDoorbell, 1);
      ++traps;
    }
    ASSERT_TRUE(WaitWord(kMsiTarget, 0xa0)) << "round " << round << ": no fence message";
    EXPECT_EQ(qemu_->Readq(kFence), 100u + round - 1);
  }
  EXPECT_EQ(Reg(kRegQueueHead), kRounds);
  EXPECT_GE(traps, 1u) << "the first doorbell found nothing polling";
  EXPECT_LE(traps, kRounds / 2);
  auto rings = daemon_->Ctl(UMDEVCTL, "attr -p gpu0 -n doorbell_rings");
  ASSERT_TRUE(rings.has_value()) << rings.error().Describe();
  EXPECT_GE(std::stoul(*rings), kRounds - traps) << *rings;
}

// doorbell_spin_us: the longest spin, so that a loaded machine's pauses
// between the test's rounds stay inside it.
INSTANTIATE_TEST_SUITE_P(
    Parents, GpuQemuTest,
    ::testing::Values(
        Setup{"CpuSharedMemory",
              R"({"driver":"gpu","engine":"cpu","name":"gpu0","memory":"16M",)"
              R"("doorbell_spin_us":100000})",
              true},
        Setup{"CpuMessageDma",
              R"({"driver":"gpu","engine":"cpu","name":"gpu0","memory":"16M",)"
              R"("doorbell_spin_us":100000})",
              false},
        Setup{"Vulkan",
              R"({"driver":"gpu","name":"gpu0","memory":"16M","doorbell_spin_us":100000})",
              true}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace umdev::test
