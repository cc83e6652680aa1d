// PciTestDevice: migration arcs, the state stream round trip, and malformed streams.
#include <linux/pci_regs.h>

#include <gtest/gtest.h>

#include "fakes/pci_test_device_test_util.h"

namespace umdev::testing {
namespace {

using namespace pci_test;       // NOLINT: the register map is these tests' vocabulary.
using namespace pci_test_util;  // NOLINT

constexpr auto kRunning = VFIO_DEVICE_STATE_RUNNING;
constexpr auto kStop = VFIO_DEVICE_STATE_STOP;
constexpr auto kStopCopy = VFIO_DEVICE_STATE_STOP_COPY;
constexpr auto kResuming = VFIO_DEVICE_STATE_RESUMING;

// Reads the whole stream in small chunks, as a transport would.
std::vector<std::byte> Save(PciTestDevice& d) {
  EXPECT_EQ(Errno(d.SetState(kStop)), 0);
  EXPECT_EQ(Errno(d.SetState(kStopCopy)), 0);
  std::vector<std::byte> stream;
  std::byte chunk[1000];
  while (true) {
    auto n = d.ReadData(chunk);
    EXPECT_TRUE(n.has_value());
    if (!n.has_value() || *n == 0) break;
    stream.insert(stream.end(), chunk, chunk + *n);
  }
  EXPECT_EQ(Errno(d.SetState(kStop)), 0);
  return stream;
}

Result<void> Load(PciTestDevice& d, std::span<const std::byte> stream) {
  UMDEV_TRY(d.SetState(kStop));
  UMDEV_TRY(d.SetState(kResuming));
  for (size_t at = 0; at < stream.size(); at += 777) {
    auto n = d.WriteData(stream.subspan(at, std::min<size_t>(777, stream.size() - at)));
    if (!n.has_value()) return std::unexpected(n.error());
  }
  return d.SetState(kStop);
}

TEST(PciTestDeviceMigrationTest, Arcs) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  EXPECT_EQ(d->flags(), uint64_t{VFIO_MIGRATION_STOP_COPY});
  EXPECT_EQ(d->GetState(), kRunning);
  EXPECT_EQ(Errno(d->SetState(kStopCopy)), EINVAL);  // Not a single arc.
  EXPECT_EQ(Errno(d->SetState(kResuming)), EINVAL);
  EXPECT_EQ(Errno(d->SetState(kRunning)), EINVAL);
  EXPECT_EQ(Errno(d->SetState(static_cast<vfio_device_mig_state>(6))), EINVAL);  // PRE_COPY.
  ASSERT_EQ(Errno(d->SetState(kStop)), 0);
  EXPECT_EQ(Errno(d->SetState(VFIO_DEVICE_STATE_RUNNING_P2P)), EINVAL);
  ASSERT_EQ(Errno(d->SetState(kStopCopy)), 0);
  EXPECT_EQ(Errno(d->SetState(kRunning)), EINVAL);
  EXPECT_EQ(Errno(d->SetState(kResuming)), EINVAL);
  ASSERT_EQ(Errno(d->SetState(kStop)), 0);
  ASSERT_EQ(Errno(d->SetState(kResuming)), 0);
  EXPECT_EQ(d->GetState(), kResuming);
  EXPECT_EQ(Errno(d->SetState(kRunning)), EINVAL);
  ASSERT_EQ(Errno(d->SetState(kStop)), EINVAL);  // An empty stream is malformed.
  EXPECT_EQ(d->GetState(), VFIO_DEVICE_STATE_ERROR);
  EXPECT_EQ(Errno(d->SetState(kStop)), EINVAL);  // Only a reset leaves ERROR.
  ASSERT_TRUE(d->Reset().has_value());
  EXPECT_EQ(d->GetState(), kRunning);
}

TEST(PciTestDeviceMigrationTest, DataOnlyInItsStates) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  std::byte b[4] = {};
  EXPECT_EQ(Errno(d->ReadData(b)), EINVAL);
  EXPECT_EQ(Errno(d->WriteData(b)), EINVAL);
  ASSERT_EQ(Errno(d->SetState(kStop)), 0);
  ASSERT_EQ(Errno(d->SetState(kStopCopy)), 0);
  EXPECT_EQ(Errno(d->WriteData(b)), EINVAL);
  ASSERT_EQ(Errno(d->SetState(kStop)), 0);
  ASSERT_EQ(Errno(d->SetState(kResuming)), 0);
  EXPECT_EQ(Errno(d->ReadData(b)), EINVAL);
  std::vector<std::byte> too_long(*d->GetDataSize() + 1);
  EXPECT_EQ(Errno(d->WriteData(too_long)), EINVAL);
}

void Dirty(PciTestDevice& d) {
  SetReg(d, kRegScratch, 0x5a5a5a5a);
  SetReg(d, kRegDmaAddrLo, 0x1000);
  SetReg(d, kRegDmaAddrHi, 0x2);
  SetReg(d, kRegDmaLen, 77);
  SetReg(d, kRegIrqRaise, 0);  // INTx status.
  for (uint32_t i = 0; i < kBufferSize; i += 8) {
    ASSERT_TRUE(WriteN(d, kBar0, kBufferOffset + i, 8, 0x0101010101010101ull * (i / 8 % 251)));
  }
  ASSERT_TRUE(WriteN(d, kBar1, 0, 4, 0xfeedface).has_value());
  SetConfig(d, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_IO | PCI_COMMAND_MASTER);
  SetConfig(d, PCI_BASE_ADDRESS_0, 4, 0xfebf0000);
  SetConfig(d, PCI_BASE_ADDRESS_1, 4, 0xc000);
  SetConfig(d, PCI_INTERRUPT_LINE, 1, 11);
  SetConfig(d, kMsiCapOffset + PCI_MSI_ADDRESS_LO, 4, 0xfee00000);
  SetConfig(d, kMsiCapOffset + PCI_MSI_DATA_64, 2, 0x4041);
  SetConfig(d, kMsixCapOffset + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE);
}

TEST(PciTestDeviceMigrationTest, RoundTripIntoASecondInstance) {
  for (auto type : {PciTestDevice::Type::kBasic, PciTestDevice::Type::kMmap}) {
    SCOPED_TRACE(static_cast<int>(type));
    FakeDma dma;
    auto source = MakeDevice(dma, type);
    auto target = MakeDevice(dma, type);
    Dirty(*source);
    dma.Fill(FakeDma::kGuestBase, std::vector<std::byte>(16, std::byte{3}));
    ASSERT_EQ(RunDma(*source, FakeDma::kGuestBase, 16, kDmaOpToDevice), kDmaStatusDone);
    if (type == PciTestDevice::Type::kMmap) {
      ASSERT_TRUE(WriteN(*source, kBar3, kBar3Size - 4, 4, 0x600d).has_value());
    }
    const uint64_t size = *source->GetDataSize();
    const auto stream = Save(*source);
    EXPECT_EQ(stream.size(), size);
    ASSERT_EQ(Errno(Load(*target, stream)), 0);
    ASSERT_EQ(Errno(target->SetState(kRunning)), 0);
    for (uint32_t reg = 0; reg < kRegsEnd; reg += 4) {
      EXPECT_EQ(Reg(*target, reg), Reg(*source, reg)) << reg;
    }
    EXPECT_EQ(DeviceBuffer(*target, kBufferSize), DeviceBuffer(*source, kBufferSize));
    EXPECT_EQ(ReadN(*target, kBar1, 0, 4), 0xfeedfaceu);
    for (uint32_t offset = 0; offset < kConfigSize; offset += 4) {
      EXPECT_EQ(Config(*target, offset, 4), Config(*source, offset, 4)) << offset;
    }
    EXPECT_NE(Config(*target, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 0u);
    if (type == PciTestDevice::Type::kMmap) {
      EXPECT_EQ(ReadN(*target, kBar3, kBar3Size - 4, 4), 0x600du);
    }
  }
}

TEST(PciTestDeviceMigrationTest, TransfersWaitForRunningAndABusyOneRunsAgainOnTheTarget) {
  FakeDma dma;
  auto source = MakeDevice(dma);
  auto target = MakeDevice(dma);
  dma.Fill(FakeDma::kGuestBase, std::vector<std::byte>(8, std::byte{0x42}));
  ASSERT_EQ(Errno(source->SetState(kStop)), 0);
  SetReg(*source, kRegDmaAddrLo, static_cast<uint32_t>(FakeDma::kGuestBase));
  SetReg(*source, kRegDmaLen, 8);
  SetReg(*source, kRegDmaCmd, kDmaOpToDevice);  // Held: the device is stopped.
  ASSERT_EQ(Errno(source->SetState(kStopCopy)), 0);
  std::vector<std::byte> stream(*source->GetDataSize());
  ASSERT_EQ(*source->ReadData(stream), stream.size());
  EXPECT_EQ(Reg(*source, kRegDmaStatus), kDmaStatusBusy);
  EXPECT_EQ(dma.calls(), 0);
  ASSERT_EQ(Errno(Load(*target, stream)), 0);
  EXPECT_EQ(Reg(*target, kRegDmaStatus), kDmaStatusBusy);
  ASSERT_EQ(Errno(target->SetState(kRunning)), 0);
  EXPECT_EQ(target->WaitDmaIdle(), kDmaStatusDone);
  EXPECT_EQ(ReadN(*target, kBar0, kBufferOffset, 8), 0x4242424242424242u);
}

TEST(PciTestDeviceMigrationTest, MalformedStreamsAreEinval) {
  FakeDma dma;
  auto source = MakeDevice(dma);
  Dirty(*source);
  const auto good = Save(*source);
  auto corrupt = [&](size_t offset) {
    auto s = good;
    s.at(offset) ^= std::byte{0xff};  // at(): the stream is never short here.
    return s;
  };
  const std::vector<std::vector<std::byte>> bad = {
      corrupt(0),                                                  // Magic.
      corrupt(4),                                                  // Version.
      corrupt(8),                                                  // Device type.
      corrupt(12 + 6 * 4),                                         // DMA status out of range.
      corrupt(good.size() - 4),                                    // BAR3 length.
      std::vector<std::byte>(good.begin(), good.end() - 1),        // Truncated.
      std::vector<std::byte>(good.begin(), good.begin() + 10),     // Truncated header.
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    auto target = MakeDevice(dma);
    SetReg(*target, kRegScratch, 9);
    EXPECT_EQ(Errno(Load(*target, bad[i])), EINVAL) << i;
    EXPECT_EQ(target->GetState(), VFIO_DEVICE_STATE_ERROR) << i;
    EXPECT_EQ(Reg(*target, kRegScratch), 9u) << i;  // Nothing applied.
  }
  // A stream of the other type does not load either.
  auto mmap_target = MakeDevice(dma, PciTestDevice::Type::kMmap);
  EXPECT_EQ(Errno(Load(*mmap_target, good)), EINVAL);
  // One byte more than any stream holds.
  auto mmap_source = MakeDevice(dma, PciTestDevice::Type::kMmap);
  auto mmap_stream = Save(*mmap_source);
  mmap_stream.push_back(std::byte{0});
  auto target = MakeDevice(dma, PciTestDevice::Type::kMmap);
  EXPECT_EQ(Errno(Load(*target, mmap_stream)), EINVAL);
}

TEST(PciTestDeviceMigrationTest, CloseEndsTheMigrationSession) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  ASSERT_EQ(Errno(d->SetState(kStop)), 0);
  ASSERT_EQ(Errno(d->SetState(kStopCopy)), 0);
  d->Close();
  EXPECT_EQ(d->GetState(), kRunning);
  std::byte b[4];
  EXPECT_EQ(Errno(d->ReadData(b)), EINVAL);
}

}  // namespace
}  // namespace umdev::testing
