// PciTestDevice: INTx level semantics, MSI, MSI-X with masking and the PBA, REQ.
#include <linux/pci_regs.h>

#include <gtest/gtest.h>

#include "fakes/pci_test_device_test_util.h"

namespace umdev::testing {
namespace {

using namespace pci_test;       // NOLINT: the register map is these tests' vocabulary.
using namespace pci_test_util;  // NOLINT

constexpr uint32_t kIntx = VFIO_PCI_INTX_IRQ_INDEX;
constexpr uint32_t kMsi = VFIO_PCI_MSI_IRQ_INDEX;
constexpr uint32_t kMsix = VFIO_PCI_MSIX_IRQ_INDEX;
constexpr uint32_t kTriggerFd = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
constexpr uint32_t kDisable = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
constexpr uint32_t kUnmaskNone = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
constexpr uint32_t kMaskNone = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK;

// Bounded polling for a signal another thread (the device's VirqfdLoop) sends.
uint64_t PollSignal(const Efd& efd) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (const uint64_t value = efd.Take(); value != 0) return value;
    std::this_thread::yield();
  }
  return 0;
}

TEST(PciTestDeviceIrqTest, IrqInfo) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  const std::pair<uint32_t, IrqInfo> expected[] = {
      {kIntx, {VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED, 1}},
      {kMsi, {VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, kMsiVectors}},
      {kMsix,
       {VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE | VFIO_IRQ_INFO_MASKABLE, kMsixVectors}},
      {VFIO_PCI_ERR_IRQ_INDEX, {VFIO_IRQ_INFO_EVENTFD, 1}},
      {VFIO_PCI_REQ_IRQ_INDEX, {VFIO_IRQ_INFO_EVENTFD, 1}}};
  for (const auto& [index, info] : expected) {
    auto got = d->GetIrqInfo(index);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->flags, info.flags) << index;
    EXPECT_EQ(got->count, info.count) << index;
  }
  EXPECT_EQ(d->GetIrqInfo(VFIO_PCI_NUM_IRQS).error().code, EINVAL);
}

TEST(PciTestDeviceIrqTest, IntxIsLevelTriggeredUntilStatusIsCleared) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  Efd efd;
  ASSERT_EQ(Errno(Irqs(*d, kIntx, kTriggerFd, 0, 1, One(efd.Dup()))), 0);
  SetReg(*d, kRegIrqRaise, 5);  // The vector number is ignored for INTx.
  EXPECT_EQ(efd.Take(), 1u);
  EXPECT_EQ(Reg(*d, kRegIrqStatus), kIrqStatusIntx);
  EXPECT_NE(Config(*d, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 0u);
  // EOI with the status still set: the line is still asserted.
  ASSERT_EQ(Errno(Irqs(*d, kIntx, kUnmaskNone, 0, 1)), 0);
  EXPECT_EQ(efd.Take(), 1u);
  SetReg(*d, kRegIrqRaise, 0);  // Already asserted and masked: nothing new.
  EXPECT_EQ(efd.Take(), 0u);
  SetReg(*d, kRegIrqStatus, 0);  // Writing 0 clears nothing.
  EXPECT_EQ(Reg(*d, kRegIrqStatus), kIrqStatusIntx);
  SetReg(*d, kRegIrqStatus, kIrqStatusIntx);  // The guest acknowledges (RW1C).
  EXPECT_EQ(Reg(*d, kRegIrqStatus), 0u);
  EXPECT_EQ(Config(*d, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 0u);
  ASSERT_EQ(Errno(Irqs(*d, kIntx, kUnmaskNone, 0, 1)), 0);
  EXPECT_EQ(efd.Take(), 0u);
  SetReg(*d, kRegIrqRaise, 0);
  EXPECT_EQ(efd.Take(), 1u);
}

TEST(PciTestDeviceIrqTest, IntxResampleEventfdUnmasks) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  Efd trigger;
  Efd resample;
  ASSERT_EQ(Errno(Irqs(*d, kIntx, kTriggerFd, 0, 1, One(trigger.Dup()))), 0);
  ASSERT_EQ(Errno(Irqs(*d, kIntx, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK, 0, 1,
                       One(resample.Dup()))),
            0);
  SetReg(*d, kRegIrqRaise, 0);
  EXPECT_EQ(trigger.Take(), 1u);
  resample.Signal();  // EOI with the status still set: signalled again.
  EXPECT_EQ(PollSignal(trigger), 1u);
  EXPECT_TRUE(d->irqs().IsMasked(kIntx, 0));
}

TEST(PciTestDeviceIrqTest, IntxDisableInCommandHoldsTheLine) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  Efd efd;
  ASSERT_EQ(Errno(Irqs(*d, kIntx, kTriggerFd, 0, 1, One(efd.Dup()))), 0);
  SetConfig(*d, PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
  SetReg(*d, kRegIrqRaise, 0);
  EXPECT_EQ(efd.Take(), 0u);
  EXPECT_EQ(Reg(*d, kRegIrqStatus), kIrqStatusIntx);
  EXPECT_NE(Config(*d, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 0u);
  SetConfig(*d, PCI_COMMAND, 2, 0);
  EXPECT_EQ(efd.Take(), 1u);
}

TEST(PciTestDeviceIrqTest, RaiseWithoutAnyModeLatchesIntxUntilEnabled) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  Efd efd;
  SetReg(*d, kRegIrqRaise, 0);
  EXPECT_EQ(Reg(*d, kRegIrqStatus), kIrqStatusIntx);
  ASSERT_EQ(Errno(Irqs(*d, kIntx, kTriggerFd, 0, 1, One(efd.Dup()))), 0);
  EXPECT_EQ(efd.Take(), 1u);
}

TEST(PciTestDeviceIrqTest, MsiDelivery) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  Efd efd;
  ASSERT_EQ(Errno(Irqs(*d, kMsi, kTriggerFd, 0, 1, One(efd.Dup()))), 0);
  SetReg(*d, kRegIrqRaise, 0);
  EXPECT_EQ(efd.Take(), 1u);
  EXPECT_EQ(Reg(*d, kRegIrqStatus), 0u);  // MSI leaves the INTx status alone.
  SetReg(*d, kRegIrqRaise, 1);            // No such vector: dropped.
  EXPECT_EQ(efd.Take(), 0u);
  EXPECT_EQ(Errno(Irqs(*d, kMsi, kMaskNone, 0, 1)), ENOTTY);
  ASSERT_EQ(Errno(Irqs(*d, kMsi, kDisable, 0, 0)), 0);
  SetReg(*d, kRegIrqRaise, 0);  // Back to INTx, which is not enabled.
  EXPECT_EQ(efd.Take(), 0u);
  EXPECT_EQ(Reg(*d, kRegIrqStatus), kIrqStatusIntx);
}

TEST(PciTestDeviceIrqTest, MsixDeliveryMaskingAndPba) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  std::array<Efd, kMsixVectors> efds;
  std::vector<UniqueFd> fds;
  for (const Efd& e : efds) fds.push_back(e.Dup());
  ASSERT_EQ(Errno(Irqs(*d, kMsix, kTriggerFd, 0, kMsixVectors, std::move(fds))), 0);
  for (uint32_t v = 0; v < kMsixVectors; ++v) {
    SetReg(*d, kRegIrqRaise, v);
    EXPECT_EQ(efds[v].Take(), 1u) << v;
  }
  SetReg(*d, kRegIrqRaise, kMsixVectors);  // Out of range: dropped.
  ASSERT_EQ(Errno(Irqs(*d, kMsix, kMaskNone, 2, 3)), 0);
  SetReg(*d, kRegIrqRaise, 3);
  SetReg(*d, kRegIrqRaise, 7);
  EXPECT_EQ(efds[3].Take(), 0u);
  EXPECT_EQ(efds[7].Take(), 1u);
  EXPECT_EQ(ReadN(*d, kBar2, kMsixPbaOffset, 8), uint64_t{1} << 3);
  EXPECT_EQ(ReadN(*d, kBar2, kMsixPbaOffset, 1), 1u << 3);  // Narrow reads too.
  EXPECT_EQ(ReadN(*d, kBar2, kMsixPbaOffset + 8, 8), 0u);
  ASSERT_EQ(Errno(Irqs(*d, kMsix, kUnmaskNone, 3, 1)), 0);
  EXPECT_EQ(efds[3].Take(), 1u);
  EXPECT_EQ(ReadN(*d, kBar2, kMsixPbaOffset, 8), 0u);
  // Disabling MSI-X clears the PBA along with the vectors.
  SetReg(*d, kRegIrqRaise, 2);
  EXPECT_EQ(ReadN(*d, kBar2, kMsixPbaOffset, 4), 1u << 2);
  ASSERT_EQ(Errno(Irqs(*d, kMsix, kDisable, 0, 0)), 0);
  EXPECT_EQ(ReadN(*d, kBar2, kMsixPbaOffset, 8), 0u);
}

TEST(PciTestDeviceIrqTest, RequestSignalsReq) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  Efd efd;
  d->Request(1);  // Nothing assigned: no effect.
  ASSERT_EQ(Errno(Irqs(*d, VFIO_PCI_REQ_IRQ_INDEX, kTriggerFd, 0, 1, One(efd.Dup()))), 0);
  d->Request(2);
  EXPECT_EQ(efd.Take(), 1u);
}

TEST(PciTestDeviceIrqTest, CloseAndResetDisableInterrupts) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  Efd efd;
  ASSERT_EQ(Errno(Irqs(*d, kMsi, kTriggerFd, 0, 1, One(efd.Dup()))), 0);
  d->Close();
  SetReg(*d, kRegIrqRaise, 0);
  EXPECT_EQ(efd.Take(), 0u);
  EXPECT_EQ(d->irqs().EnabledIndex(), std::nullopt);
  ASSERT_EQ(Errno(Irqs(*d, kIntx, kTriggerFd, 0, 1, One(efd.Dup()))), 0);
  EXPECT_EQ(efd.Take(), 1u);  // The latched INTx status survived Close().
  ASSERT_TRUE(d->Reset().has_value());
  EXPECT_EQ(d->irqs().EnabledIndex(), std::nullopt);
  EXPECT_EQ(Reg(*d, kRegIrqStatus), 0u);
}

}  // namespace
}  // namespace umdev::testing
