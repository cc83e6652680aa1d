// PciTestDevice: asynchronous DMA on the worker thread, both directions and failures.
#include <gtest/gtest.h>

#include "fakes/pci_test_device_test_util.h"

namespace umdev::testing {
namespace {

using namespace pci_test;       // NOLINT: the register map is these tests' vocabulary.
using namespace pci_test_util;  // NOLINT

constexpr uint64_t kGuest = FakeDma::kGuestBase + 0x100;

std::vector<std::byte> Pattern(size_t size, uint8_t seed) {
  std::vector<std::byte> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(seed + i * 7);
  return bytes;
}

TEST(PciTestDeviceDmaTest, GuestToDeviceAndBack) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  const auto data = Pattern(kDmaMaxLen, 3);
  dma.Fill(kGuest, data);
  EXPECT_EQ(RunDma(*d, kGuest, kDmaMaxLen, kDmaOpToDevice), kDmaStatusDone);
  EXPECT_EQ(DeviceBuffer(*d, kDmaMaxLen), data);
  EXPECT_EQ(Reg(*d, kRegDmaCount), 1u);
  EXPECT_EQ(Reg(*d, kRegDmaError), 0u);
  // Device to guest, a prefix, to a different address.
  const uint64_t out = FakeDma::kGuestBase + 0x2000;
  EXPECT_EQ(RunDma(*d, out, 100, kDmaOpFromDevice), kDmaStatusDone);
  EXPECT_EQ(dma.Bytes(out, 100), std::vector<std::byte>(data.begin(), data.begin() + 100));
  EXPECT_EQ(dma.Bytes(out + 100, 1)[0], std::byte{0});
  EXPECT_EQ(Reg(*d, kRegDmaCount), 2u);
  EXPECT_EQ(Reg(*d, kRegDmaCmd), kDmaOpFromDevice);
}

TEST(PciTestDeviceDmaTest, RunsOnTheWorkerThreadWhileTheCallerContinues) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  dma.CloseGate();
  SetReg(*d, kRegDmaAddrLo, static_cast<uint32_t>(kGuest));
  SetReg(*d, kRegDmaLen, 16);
  SetReg(*d, kRegDmaCmd, kDmaOpToDevice);  // Returns with the transfer held at the gate.
  dma.WaitForWaiter();
  EXPECT_NE(dma.last_caller(), std::this_thread::get_id());
  EXPECT_EQ(Reg(*d, kRegDmaStatus), kDmaStatusBusy);
  EXPECT_EQ(Reg(*d, kRegId), kIdValue);  // Registers stay served meanwhile.
  // A second command while busy is refused and starts nothing.
  EXPECT_EQ(Errno(WriteN(*d, kBar0, kRegDmaCmd, 4, kDmaOpFromDevice)), EBUSY);
  EXPECT_EQ(Reg(*d, kRegDmaCmd), kDmaOpToDevice);
  dma.OpenGate();
  EXPECT_EQ(d->WaitDmaIdle(), kDmaStatusDone);
  EXPECT_EQ(dma.calls(), 1);
}

TEST(PciTestDeviceDmaTest, FaultReportsEfault) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  const uint64_t outside = FakeDma::kGuestBase + FakeDma::kGuestSize - 8;
  EXPECT_EQ(RunDma(*d, outside, 16, kDmaOpToDevice), kDmaStatusError);
  EXPECT_EQ(Reg(*d, kRegDmaError), static_cast<uint32_t>(EFAULT));
  EXPECT_EQ(Reg(*d, kRegDmaCount), 0u);
  EXPECT_EQ(RunDma(*d, 0x10, 1, kDmaOpFromDevice), kDmaStatusError);
  EXPECT_EQ(Reg(*d, kRegDmaError), 14u);
  // Success clears the error register.
  EXPECT_EQ(RunDma(*d, kGuest, 1, kDmaOpFromDevice), kDmaStatusDone);
  EXPECT_EQ(Reg(*d, kRegDmaError), 0u);
}

TEST(PciTestDeviceDmaTest, BadLengthAndOpAreEinvalWithoutTouchingMemory) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  for (uint32_t len : {0u, kDmaMaxLen + 1, 0xffffffffu}) {
    EXPECT_EQ(RunDma(*d, kGuest, len, kDmaOpToDevice), kDmaStatusError) << len;
    EXPECT_EQ(Reg(*d, kRegDmaError), static_cast<uint32_t>(EINVAL));
  }
  for (uint32_t op : {0u, 3u}) {
    EXPECT_EQ(RunDma(*d, kGuest, 4, op), kDmaStatusError) << op;
    EXPECT_EQ(Reg(*d, kRegDmaError), static_cast<uint32_t>(EINVAL));
  }
  EXPECT_EQ(dma.calls(), 0);
  EXPECT_EQ(Reg(*d, kRegDmaCount), 0u);
}

TEST(PciTestDeviceDmaTest, CompletionInterruptOnSuccessAndFailure) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  Efd msi;
  ASSERT_EQ(Errno(Irqs(*d, VFIO_PCI_MSI_IRQ_INDEX,
                       VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1,
                       One(msi.Dup()))),
            0);
  EXPECT_EQ(RunDma(*d, kGuest, 8, kDmaOpToDevice | kDmaCmdIrq), kDmaStatusDone);
  EXPECT_EQ(msi.Take(), 1u);
  EXPECT_EQ(RunDma(*d, kGuest, 8, kDmaOpToDevice), kDmaStatusDone);
  EXPECT_EQ(msi.Take(), 0u);  // Not asked for.
  EXPECT_EQ(RunDma(*d, 0, 8, kDmaOpFromDevice | kDmaCmdIrq), kDmaStatusError);
  EXPECT_EQ(msi.Take(), 1u);
}

TEST(PciTestDeviceDmaTest, CompletionInterruptThroughIntxAndMsixVectorZero) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  Efd efd;
  const uint32_t trigger = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  ASSERT_EQ(Errno(Irqs(*d, VFIO_PCI_INTX_IRQ_INDEX, trigger, 0, 1, One(efd.Dup()))), 0);
  EXPECT_EQ(RunDma(*d, kGuest, 8, kDmaOpToDevice | kDmaCmdIrq), kDmaStatusDone);
  EXPECT_EQ(efd.Take(), 1u);
  EXPECT_EQ(Reg(*d, kRegIrqStatus), kIrqStatusIntx);
  d->Close();
  SetReg(*d, kRegIrqStatus, kIrqStatusIntx);
  Efd vector1;
  std::vector<UniqueFd> fds;
  fds.push_back(efd.Dup());
  fds.push_back(vector1.Dup());
  ASSERT_EQ(Errno(Irqs(*d, VFIO_PCI_MSIX_IRQ_INDEX, trigger, 0, 2, std::move(fds))), 0);
  EXPECT_EQ(RunDma(*d, kGuest, 8, kDmaOpFromDevice | kDmaCmdIrq), kDmaStatusDone);
  EXPECT_EQ(efd.Take(), 1u);
  EXPECT_EQ(vector1.Take(), 0u);
}

TEST(PciTestDeviceDmaTest, ResetDuringATransferDiscardsItsResult) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  Efd msi;
  ASSERT_EQ(Errno(Irqs(*d, VFIO_PCI_MSI_IRQ_INDEX,
                       VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1,
                       One(msi.Dup()))),
            0);
  dma.Fill(kGuest, Pattern(32, 9));
  dma.CloseGate();
  SetReg(*d, kRegDmaAddrLo, static_cast<uint32_t>(kGuest));
  SetReg(*d, kRegDmaLen, 32);
  SetReg(*d, kRegDmaCmd, kDmaOpToDevice | kDmaCmdIrq);
  dma.WaitForWaiter();
  ASSERT_TRUE(d->Reset().has_value());
  EXPECT_EQ(Reg(*d, kRegDmaStatus), kDmaStatusIdle);
  dma.OpenGate();
  EXPECT_EQ(d->WaitDmaIdle(), kDmaStatusIdle);
  EXPECT_EQ(DeviceBuffer(*d, 32), std::vector<std::byte>(32));
  EXPECT_EQ(Reg(*d, kRegDmaCount), 0u);
  EXPECT_EQ(msi.Take(), 0u);
  // The device works again after the reset.
  EXPECT_EQ(RunDma(*d, kGuest, 32, kDmaOpToDevice), kDmaStatusDone);
  EXPECT_EQ(DeviceBuffer(*d, 32), Pattern(32, 9));
}

TEST(PciTestDeviceDmaTest, DestroyingTheDeviceWithATransferPendingJoinsTheWorker) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  dma.CloseGate();
  SetReg(*d, kRegDmaAddrLo, static_cast<uint32_t>(kGuest));
  SetReg(*d, kRegDmaLen, 4);
  SetReg(*d, kRegDmaCmd, kDmaOpFromDevice);
  dma.WaitForWaiter();
  std::thread opener([&] { dma.OpenGate(); });
  d.reset();
  opener.join();
  EXPECT_EQ(dma.calls(), 1);
}

TEST(PciTestDeviceDmaTest, ConcurrentRegisterTrafficDuringTransfers) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop) {
      (void)Reg(*d, kRegDmaStatus);
      (void)ReadN(*d, kBar0, kBufferOffset, 8);
      SetReg(*d, kRegScratch, 1);
    }
  });
  dma.Fill(kGuest, Pattern(64, 1));
  for (int i = 0; i < 200; ++i) {
    ASSERT_EQ(RunDma(*d, kGuest, 64, i % 2 == 0 ? kDmaOpToDevice : kDmaOpFromDevice),
              kDmaStatusDone);
  }
  stop = true;
  reader.join();
  EXPECT_EQ(Reg(*d, kRegDmaCount), 200u);
}

}  // namespace
}  // namespace umdev::testing
