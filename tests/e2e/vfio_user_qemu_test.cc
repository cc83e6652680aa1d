// Real QEMU (vfio-user-pci, under qtest) attached to a umdev device served by
// a real umdevd: config space, BAR I/O, INTx, MSI, MSI-X, DMA through shared
// memory and through messages, reset, and a QEMU killed mid-traffic.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstring>
#include <numeric>
#include <thread>

#include "e2e/qemu_qtest.h"
#include "e2e/umdevd_process.h"
#include "fakes/pci_test_device.h"
#include "umdev/common/uuid.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;
namespace dev = umdev::testing::pci_test;

constexpr uint8_t kSlot = 4;
// Where the tests place the BARs (no firmware runs under qtest): inside q35's
// 32-bit PCI hole, away from the LAPIC/IOAPIC pages.
constexpr uint64_t kBar0 = 0xe0000000;
constexpr uint64_t kBar2 = 0xe0001000;
constexpr uint64_t kBar3 = 0xe0010000;
constexpr uint16_t kBar1Port = 0xc000;
constexpr uint64_t kGuestBuffer = 0x200000;  // Guest RAM the device DMAs to and from.
constexpr uint64_t kMsiTarget = 0x300000;    // Guest RAM MSI writes land in.

class VfioUserQemuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto root = QemuRootFromEnvironment();
    if (!root) {
      GTEST_SKIP() << "UMDEV_QEMU_ROOT is not set: run 'make test', which builds the QEMU "
                      "root (scripts/qemu-root) and points the tests at it";
    }
    root_ = *root;
    auto scratch = RootScratchDir::Create(root_);
    ASSERT_TRUE(scratch.has_value()) << scratch.error().Describe();
    scratch_.emplace(std::move(*scratch));
    auto daemon = UmdevdProcess::Start(
        UMDEVD_TESTBED, scratch_->path(),
        R"({"parents":[{"driver":"test-pci","name":"pci0"}],)"
        R"("limits":{"removal_timeout_ms":1000}})");
    ASSERT_TRUE(daemon.has_value()) << daemon.error().Describe();
    daemon_.emplace(std::move(*daemon));
  }

  void TearDown() override {
    qemu_.reset();
    if (daemon_ && HasFailure()) std::cerr << "umdevd log:\n" << daemon_->Log();
    daemon_.reset();
    scratch_.reset();
  }

  // Creates an instance of |type| and returns its UUID.
  std::string CreateInstance(const std::string& type) {
    const std::string uuid = Uuid::Generate().ToString();
    auto out = daemon_->Ctl(UMDEVCTL, "start -p pci0 -t " + type + " -u " + uuid);
    EXPECT_TRUE(out.has_value()) << out.error().Describe();
    return uuid;
  }

  void StartQemu(const std::string& uuid, bool shared_memory = true) {
    QemuQtestOptions options;
    options.root = root_;
    options.shared_memory = shared_memory;
    options.devices.push_back(VfioUserPciDevice{daemon_->SocketOf(uuid), "04.0", "dev0"});
    auto qemu = QemuQtest::Start(std::move(options));
    ASSERT_TRUE(qemu.has_value()) << qemu.error().Describe();
    qemu_.emplace(std::move(*qemu));
  }

  // Places the BARs and turns on I/O, memory and bus mastering, as firmware would.
  void EnableDevice(bool with_bar3 = false) {
    ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x10, static_cast<uint32_t>(kBar0)));
    ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x14, kBar1Port));
    ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x18, static_cast<uint32_t>(kBar2)));
    if (with_bar3) {
      ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x1c, static_cast<uint32_t>(kBar3)));
    }
    ASSERT_TRUE(qemu_->ConfigWrite16(kSlot, 0, 0x04, 0x0007));
  }

  uint32_t Reg(uint32_t offset) {
    auto value = qemu_->Readl(kBar0 + offset);
    EXPECT_TRUE(value.has_value()) << value.error().Describe();
    return value.value_or(0xdeadbeef);
  }
  void SetReg(uint32_t offset, uint32_t value) {
    auto done = qemu_->Writel(kBar0 + offset, value);
    EXPECT_TRUE(done.has_value()) << done.error().Describe();
  }

  // Offset of capability |id| in config space, or 0.
  uint8_t FindCapability(uint8_t id) {
    uint8_t at = qemu_->ConfigRead8(kSlot, 0, 0x34).value_or(0);
    for (int guard = 0; at != 0 && guard < 48; ++guard) {
      if (qemu_->ConfigRead8(kSlot, 0, at).value_or(0) == id) return at;
      at = qemu_->ConfigRead8(kSlot, 0, at + 1).value_or(0);
    }
    return 0;
  }

  // Runs one DMA command and waits (in virtual time too) for it to finish.
  uint32_t RunDma(uint64_t address, uint32_t length, uint32_t command) {
    SetReg(dev::kRegDmaAddrLo, static_cast<uint32_t>(address));
    SetReg(dev::kRegDmaAddrHi, static_cast<uint32_t>(address >> 32));
    SetReg(dev::kRegDmaLen, length);
    SetReg(dev::kRegDmaCmd, command);
    uint32_t status = dev::kDmaStatusBusy;
    for (int i = 0; i < 2000 && status == dev::kDmaStatusBusy; ++i) {
      status = Reg(dev::kRegDmaStatus);
      if (status == dev::kDmaStatusBusy) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return status;
  }

  void CheckDmaBothWays() {
    std::vector<uint8_t> pattern(512);
    std::iota(pattern.begin(), pattern.end(), uint8_t{3});
    ASSERT_TRUE(qemu_->MemWrite(kGuestBuffer, pattern));
    ASSERT_EQ(RunDma(kGuestBuffer, 512, dev::kDmaOpToDevice), dev::kDmaStatusDone)
        << "DMA_ERROR " << Reg(dev::kRegDmaError);
    for (uint32_t i = 0; i < 512; i += 4) {
      uint32_t expected;
      std::memcpy(&expected, pattern.data() + i, 4);
      ASSERT_EQ(Reg(dev::kBufferOffset + i), expected) << "at " << i;
    }
    ASSERT_EQ(RunDma(kGuestBuffer + 0x1000, 512, dev::kDmaOpFromDevice), dev::kDmaStatusDone)
        << "DMA_ERROR " << Reg(dev::kRegDmaError);
    auto back = qemu_->MemRead(kGuestBuffer + 0x1000, 512);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, pattern);
  }

  fs::path root_;
  std::optional<RootScratchDir> scratch_;
  std::optional<UmdevdProcess> daemon_;
  std::optional<QemuQtest> qemu_;
};

TEST_F(VfioUserQemuTest, QemuReadsTheDevicesConfigSpace) {
  const std::string uuid = CreateInstance("test_pci-basic");
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid));
  EXPECT_EQ(qemu_->ConfigRead16(kSlot, 0, 0x00), dev::kVendorId);
  EXPECT_EQ(qemu_->ConfigRead16(kSlot, 0, 0x02), dev::kDeviceId);
  EXPECT_EQ(qemu_->ConfigRead8(kSlot, 0, 0x08), dev::kRevision);
  EXPECT_EQ(qemu_->ConfigRead8(kSlot, 0, 0x3d), 1);  // INTx pin A.
  EXPECT_NE(FindCapability(0x05), 0);  // MSI.
  EXPECT_NE(FindCapability(0x11), 0);  // MSI-X.
  // BAR0 sizing as firmware does it: 4 KiB of 32-bit memory.
  ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x10, 0xffffffff));
  EXPECT_EQ(qemu_->ConfigRead32(kSlot, 0, 0x10), 0xfffff000u);
  // BAR1 is 16 bytes of I/O ports.
  ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, 0x14, 0xffffffff));
  EXPECT_EQ(qemu_->ConfigRead32(kSlot, 0, 0x14).value_or(0) & 0xfffffff1u, 0xfffffff1u);
}

TEST_F(VfioUserQemuTest, BarReadsAndWritesReachTheDevice) {
  const std::string uuid = CreateInstance("test_pci-basic");
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid));
  ASSERT_NO_FATAL_FAILURE(EnableDevice());
  EXPECT_EQ(Reg(dev::kRegId), dev::kIdValue);
  SetReg(dev::kRegScratch, 0x12345678);
  EXPECT_EQ(Reg(dev::kRegScratch), 0x12345678u);
  ASSERT_TRUE(qemu_->Writeb(kBar0 + dev::kBufferOffset + 5, 0xab));
  EXPECT_EQ(qemu_->Readb(kBar0 + dev::kBufferOffset + 5), 0xab);
  ASSERT_TRUE(qemu_->Writeq(kBar0 + dev::kBufferOffset + 8, 0x1122334455667788ull));
  EXPECT_EQ(qemu_->Readq(kBar0 + dev::kBufferOffset + 8), 0x1122334455667788ull);
  // The I/O-port BAR.
  ASSERT_TRUE(qemu_->Outb(kBar1Port + 3, 0x5a));
  EXPECT_EQ(qemu_->Inb(kBar1Port + 3), 0x5a);
  ASSERT_TRUE(qemu_->Outl(kBar1Port + 8, 0xa5a5f00d));
  EXPECT_EQ(qemu_->Inl(kBar1Port + 8), 0xa5a5f00du);
}

TEST_F(VfioUserQemuTest, IntxIsDeliveredAndEndsWhenTheDeviceIsServiced) {
  const std::string uuid = CreateInstance("test_pci-basic");
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid));
  ASSERT_NO_FATAL_FAILURE(EnableDevice());
  ASSERT_TRUE(qemu_->IrqInterceptIn("ioapic"));
  SetReg(dev::kRegIrqRaise, 0);
  // Slot 4 pin A reaches one of the IO-APIC's PCI pins (16-23).
  int line = -1;
  for (int wait = 0; wait < 200 && line < 0; ++wait) {
    (void)qemu_->Command("clock_step 1000");  // Lets the harness read IRQ lines.
    for (int pin = 16; pin < 24 && line < 0; ++pin) {
      if (qemu_->IrqRaiseCount(pin) > 0) line = pin;
    }
    if (line < 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(line, 16) << "no IO-APIC PCI pin was raised";
  EXPECT_TRUE(qemu_->IrqLevel(line));
  EXPECT_EQ(Reg(dev::kRegIrqStatus) & 1u, 1u);
  // The driver acknowledges in the device; QEMU's EOI unmasks, and with
  // nothing pending the line drops.
  SetReg(dev::kRegIrqStatus, 1);
  ASSERT_TRUE(qemu_->WaitIrq(line, false, std::chrono::seconds(10)));
  // A second interrupt is delivered again (the unmask really happened).
  const int raised = qemu_->IrqRaiseCount(line);
  SetReg(dev::kRegIrqRaise, 0);
  ASSERT_TRUE(qemu_->WaitIrq(line, true, std::chrono::seconds(10)));
  EXPECT_EQ(qemu_->IrqRaiseCount(line), raised + 1);
}

TEST_F(VfioUserQemuTest, MsiWritesItsMessageIntoGuestMemory) {
  const std::string uuid = CreateInstance("test_pci-basic");
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid));
  ASSERT_NO_FATAL_FAILURE(EnableDevice());
  const uint8_t msi = FindCapability(0x05);
  ASSERT_NE(msi, 0);
  // 64-bit MSI: address at +4/+8, data at +12, then enable.
  ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, msi + 4, static_cast<uint32_t>(kMsiTarget)));
  ASSERT_TRUE(qemu_->ConfigWrite32(kSlot, 0, msi + 8, 0));
  ASSERT_TRUE(qemu_->ConfigWrite16(kSlot, 0, msi + 12, 0x4321));
  const uint16_t control = qemu_->ConfigRead16(kSlot, 0, msi + 2).value_or(0);
  ASSERT_TRUE(qemu_->ConfigWrite16(kSlot, 0, msi + 2, control | 1));
  SetReg(dev::kRegIrqRaise, 0);
  uint32_t seen = 0;
  for (int i = 0; i < 500 && seen != 0x4321; ++i) {
    seen = qemu_->Readl(kMsiTarget).value_or(0);
    if (seen != 0x4321) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(seen, 0x4321u);
}

TEST_F(VfioUserQemuTest, MsixVectorsDeliverAndAMaskedOneWaitsForItsUnmask) {
  const std::string uuid = CreateInstance("test_pci-basic");
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid));
  ASSERT_NO_FATAL_FAILURE(EnableDevice());
  const uint8_t msix = FindCapability(0x11);
  ASSERT_NE(msix, 0);
  // Table entry 3: address, data, unmasked; then enable MSI-X.
  const uint64_t entry = kBar2 + dev::kMsixTableOffset + 3 * 16;
  ASSERT_TRUE(qemu_->Writel(entry + 0, static_cast<uint32_t>(kMsiTarget + 0x40)));
  ASSERT_TRUE(qemu_->Writel(entry + 4, 0));
  ASSERT_TRUE(qemu_->Writel(entry + 8, 0xbeef));
  ASSERT_TRUE(qemu_->Writel(entry + 12, 0));
  ASSERT_TRUE(qemu_->ConfigWrite16(kSlot, 0, msix + 2, 0x8000));
  SetReg(dev::kRegIrqRaise, 3);
  uint32_t seen = 0;
  for (int i = 0; i < 500 && seen != 0xbeef; ++i) {
    seen = qemu_->Readl(kMsiTarget + 0x40).value_or(0);
    if (seen != 0xbeef) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(seen, 0xbeefu);
  // Mask vector 3 and raise it: nothing is written while it stays masked;
  // unmasking delivers it. QEMU 11.1 keeps the mask and the pending bit to
  // itself (no SET_IRQS MASK goes out, though it forwards PBA reads to the
  // device), so the device-side PBA is covered by the server's unit tests.
  ASSERT_TRUE(qemu_->Writel(kMsiTarget + 0x40, 0));
  ASSERT_TRUE(qemu_->Writel(entry + 12, 1));
  SetReg(dev::kRegIrqRaise, 3);
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(qemu_->Readl(kMsiTarget + 0x40), 0u) << "a masked vector was delivered";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(qemu_->Writel(entry + 12, 0));
  seen = 0;
  for (int i = 0; i < 500 && seen != 0xbeef; ++i) {
    seen = qemu_->Readl(kMsiTarget + 0x40).value_or(0);
    if (seen != 0xbeef) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(seen, 0xbeefu);
}

TEST_F(VfioUserQemuTest, DmaWorksBothWaysThroughSharedMemory) {
  const std::string uuid = CreateInstance("test_pci-basic");
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid, /*shared_memory=*/true));
  ASSERT_NO_FATAL_FAILURE(EnableDevice());
  ASSERT_NO_FATAL_FAILURE(CheckDmaBothWays());
}

TEST_F(VfioUserQemuTest, DmaWorksBothWaysThroughMessagesWithPrivateMemory) {
  const std::string uuid = CreateInstance("test_pci-basic");
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid, /*shared_memory=*/false));
  ASSERT_NO_FATAL_FAILURE(EnableDevice());
  ASSERT_NO_FATAL_FAILURE(CheckDmaBothWays());
}

TEST_F(VfioUserQemuTest, DmaBeforeBusMasteringFailsWithQemusErrno) {
  const std::string uuid = CreateInstance("test_pci-basic");
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid, /*shared_memory=*/false));
  ASSERT_NO_FATAL_FAILURE(EnableDevice());
  ASSERT_TRUE(qemu_->ConfigWrite16(kSlot, 0, 0x04, 0x0003));  // Memory and I/O only.
  EXPECT_EQ(RunDma(kGuestBuffer, 64, dev::kDmaOpToDevice), dev::kDmaStatusError);
  EXPECT_EQ(Reg(dev::kRegDmaError), static_cast<uint32_t>(ENODEV));
}

TEST_F(VfioUserQemuTest, MachineResetResetsTheDevice) {
  const std::string uuid = CreateInstance("test_pci-basic");
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid));
  ASSERT_NO_FATAL_FAILURE(EnableDevice());
  SetReg(dev::kRegScratch, 0x600d);
  ASSERT_EQ(Reg(dev::kRegScratch), 0x600du);
  // The ICH9 reset control register: a full system reset, which QEMU
  // passes on as DEVICE_RESET.
  ASSERT_TRUE(qemu_->Outb(0xcf9, 0x06));
  for (int i = 0; i < 100 && qemu_->ConfigRead16(kSlot, 0, 0x04).value_or(1) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_NO_FATAL_FAILURE(EnableDevice());
  EXPECT_EQ(Reg(dev::kRegScratch), 0u);
  EXPECT_NE(daemon_->Log().find("DEVICE_RESET"), std::string::npos);
}

TEST_F(VfioUserQemuTest, MmapBarIsMappedByQemuAndCoherentWithTrappedAccess) {
  const std::string uuid = CreateInstance("test_pci-mmap");
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid));
  ASSERT_NO_FATAL_FAILURE(EnableDevice(/*with_bar3=*/true));
  // [0x1000, 0x10000) is mmapped by QEMU; [0, 0x1000) is trapped. Both are
  // the same memory, so a write through either is read through the other.
  ASSERT_TRUE(qemu_->Writel(kBar3 + 0x2000, 0xfeedc0de));
  ASSERT_TRUE(qemu_->Writel(kBar3 + 0x10, 0x0badcafe));
  EXPECT_EQ(qemu_->Readl(kBar3 + 0x2000), 0xfeedc0deu);
  EXPECT_EQ(qemu_->Readl(kBar3 + 0x10), 0x0badcafeu);
}

TEST_F(VfioUserQemuTest, QemuKilledMidTrafficThenAFreshQemuAttaches) {
  const std::string uuid = CreateInstance("test_pci-basic");
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid, /*shared_memory=*/false));
  ASSERT_NO_FATAL_FAILURE(EnableDevice());
  // A long message-DMA transfer is in flight when QEMU dies.
  SetReg(dev::kRegDmaAddrLo, static_cast<uint32_t>(kGuestBuffer));
  SetReg(dev::kRegDmaAddrHi, 0);
  SetReg(dev::kRegDmaLen, 2048);
  SetReg(dev::kRegDmaCmd, dev::kDmaOpToDevice);
  for (int i = 0; i < 20; ++i) (void)Reg(dev::kRegScratch);
  ASSERT_TRUE(qemu_->Kill(SIGKILL));
  ASSERT_TRUE(qemu_->WaitExit());
  qemu_.reset();
  // The daemon notices, unmaps, and accepts the next client.
  std::string log;
  for (int i = 0; i < 500; ++i) {
    log = daemon_->Log();
    if (log.find("client gone") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_NE(log.find("client gone"), std::string::npos) << log;
  ASSERT_NO_FATAL_FAILURE(StartQemu(uuid, /*shared_memory=*/true));
  ASSERT_NO_FATAL_FAILURE(EnableDevice());
  EXPECT_EQ(Reg(dev::kRegId), dev::kIdValue);
  ASSERT_NO_FATAL_FAILURE(CheckDmaBothWays());
  EXPECT_TRUE(daemon_->running());
  auto list = daemon_->Ctl(UMDEVCTL, "list");
  ASSERT_TRUE(list.has_value());
  EXPECT_NE(list->find(uuid), std::string::npos);
}

}  // namespace
}  // namespace umdev::test
