// PciTestDevice: identity, regions, registers, BAR1/BAR2/BAR3, reset and the parent driver.
#include <linux/pci_regs.h>
#include <sys/mman.h>

#include <gtest/gtest.h>

#include "fakes/pci_test_device_test_util.h"

namespace umdev::testing {
namespace {

using namespace pci_test;       // NOLINT: the register map is these tests' vocabulary.
using namespace pci_test_util;  // NOLINT

constexpr uint32_t kConfig = VFIO_PCI_CONFIG_REGION_INDEX;

TEST(PciTestDeviceTest, ConfigIdentity) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  EXPECT_EQ(Config(*d, PCI_VENDOR_ID, 2), kVendorId);
  EXPECT_EQ(Config(*d, PCI_DEVICE_ID, 2), kDeviceId);
  EXPECT_EQ(Config(*d, PCI_REVISION_ID, 1), kRevision);
  EXPECT_EQ(Config(*d, PCI_CLASS_PROG, 1) | Config(*d, PCI_CLASS_DEVICE, 2) << 8, kClassCode);
  EXPECT_EQ(Config(*d, PCI_SUBSYSTEM_VENDOR_ID, 2), kSubsystemVendorId);
  EXPECT_EQ(Config(*d, PCI_SUBSYSTEM_ID, 2), kSubsystemId);
  EXPECT_EQ(Config(*d, PCI_INTERRUPT_PIN, 1), 1u);  // INTA#.
  EXPECT_EQ(Config(*d, PCI_HEADER_TYPE, 1), 0u);
  SetConfig(*d, PCI_VENDOR_ID, 4, 0xffffffff);  // Read-only.
  EXPECT_EQ(Config(*d, PCI_VENDOR_ID, 2), kVendorId);
}

TEST(PciTestDeviceTest, Capabilities) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  EXPECT_NE(Config(*d, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST, 0u);
  EXPECT_EQ(Config(*d, PCI_CAPABILITY_LIST, 1), kPmCapOffset);
  EXPECT_EQ(Config(*d, kPmCapOffset, 1), PCI_CAP_ID_PM);
  EXPECT_EQ(Config(*d, kPmCapOffset + 1, 1), kMsiCapOffset);
  EXPECT_EQ(Config(*d, kMsiCapOffset, 1), PCI_CAP_ID_MSI);
  EXPECT_EQ(Config(*d, kMsiCapOffset + 1, 1), kMsixCapOffset);
  const uint64_t msi_flags = Config(*d, kMsiCapOffset + PCI_MSI_FLAGS, 2);
  EXPECT_NE(msi_flags & PCI_MSI_FLAGS_64BIT, 0u);
  EXPECT_EQ(msi_flags & PCI_MSI_FLAGS_QMASK, 0u);  // 1 vector.
  EXPECT_EQ(msi_flags & PCI_MSI_FLAGS_MASKBIT, 0u);
  EXPECT_EQ(Config(*d, kMsixCapOffset, 1), PCI_CAP_ID_MSIX);
  EXPECT_EQ(Config(*d, kMsixCapOffset + 1, 1), 0u);
  EXPECT_EQ(Config(*d, kMsixCapOffset + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_QSIZE,
            kMsixVectors - 1);
  EXPECT_EQ(Config(*d, kMsixCapOffset + PCI_MSIX_TABLE, 4), kMsixTableOffset | 2u);
  EXPECT_EQ(Config(*d, kMsixCapOffset + PCI_MSIX_PBA, 4), kMsixPbaOffset | 2u);
}

TEST(PciTestDeviceTest, BarsAsTheGuestSizesThem) {
  FakeDma dma;
  for (auto type : {PciTestDevice::Type::kBasic, PciTestDevice::Type::kMmap}) {
    auto d = MakeDevice(dma, type);
    const auto size_of = [&](unsigned bar) {
      const uint32_t offset = PCI_BASE_ADDRESS_0 + 4 * bar;
      SetConfig(*d, offset, 4, 0xffffffff);
      return static_cast<uint32_t>(Config(*d, offset, 4));
    };
    EXPECT_EQ(size_of(0), static_cast<uint32_t>(~(kBar0Size - 1)));  // Mem32, non-prefetch.
    EXPECT_EQ(size_of(1), static_cast<uint32_t>(~(kBar1Size - 1) | PCI_BASE_ADDRESS_SPACE_IO));
    EXPECT_EQ(size_of(2), static_cast<uint32_t>(~(kBar2Size - 1)));
    EXPECT_EQ(size_of(3), type == PciTestDevice::Type::kMmap
                              ? static_cast<uint32_t>(~(kBar3Size - 1))
                              : 0u);
    EXPECT_EQ(size_of(4), 0u);
    EXPECT_EQ(size_of(5), 0u);
  }
}

TEST(PciTestDeviceTest, DeviceAndRegionInfo) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  const DeviceInfo info = d->GetInfo();
  EXPECT_EQ(info.flags, VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET);
  EXPECT_EQ(info.num_regions, 9u);
  EXPECT_EQ(info.num_irqs, 5u);
  constexpr uint32_t kRw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
  const std::pair<uint32_t, uint64_t> expected[] = {
      {kBar0, kBar0Size}, {kBar1, kBar1Size}, {kBar2, kBar2Size}, {kConfig, kConfigSize}};
  for (auto [index, size] : expected) {
    auto region = d->GetRegionInfo(index);
    ASSERT_TRUE(region.has_value());
    EXPECT_EQ(region->flags, kRw) << index;
    EXPECT_EQ(region->size, size) << index;
    EXPECT_TRUE(region->sparse_mmap.empty());
    EXPECT_EQ(region->mmap_fd, -1);
  }
  for (uint32_t index : {kBar3, 4u, 5u, uint32_t{VFIO_PCI_ROM_REGION_INDEX},
                         uint32_t{VFIO_PCI_VGA_REGION_INDEX}}) {
    auto region = d->GetRegionInfo(index);
    ASSERT_TRUE(region.has_value());
    EXPECT_EQ(region->size, 0u) << index;
    EXPECT_EQ(region->flags, 0u) << index;
  }
  EXPECT_EQ(d->GetRegionInfo(9).error().code, EINVAL);
  std::byte b[4];
  EXPECT_EQ(Errno(d->RegionRead(kBar3, 0, b)), EINVAL);  // No BAR3 in "basic".
  EXPECT_EQ(Errno(d->RegionRead(4, 0, b)), EINVAL);
  EXPECT_EQ(Errno(d->RegionWrite(VFIO_PCI_ROM_REGION_INDEX, 0, b)), EINVAL);
  EXPECT_EQ(Errno(d->RegionRead(9, 0, b)), EINVAL);
  EXPECT_EQ(Errno(d->RegionRead(kConfig, kConfigSize - 2, b)), EINVAL);
  EXPECT_EQ(Errno(d->RegionWrite(kConfig, kConfigSize, std::span<const std::byte>(b, 1))), EINVAL);
}

TEST(PciTestDeviceTest, Bar0Registers) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  EXPECT_EQ(Reg(*d, kRegId), kIdValue);
  SetReg(*d, kRegId, 0);  // Read-only: ignored.
  EXPECT_EQ(Reg(*d, kRegId), kIdValue);
  EXPECT_EQ(Reg(*d, kRegScratch), 0u);
  SetReg(*d, kRegScratch, 0xdeadbeef);
  EXPECT_EQ(Reg(*d, kRegScratch), 0xdeadbeefu);
  EXPECT_EQ(Reg(*d, kRegIrqRaise), 0u);  // Write-only.
  for (uint32_t reg : {kRegDmaAddrLo, kRegDmaAddrHi, kRegDmaLen}) {
    SetReg(*d, reg, 0x1000 + reg);
    EXPECT_EQ(Reg(*d, reg), 0x1000 + reg);
  }
  for (uint32_t reg : {kRegDmaStatus, kRegDmaError, kRegDmaCount}) {
    EXPECT_EQ(Reg(*d, reg), 0u);
    SetReg(*d, reg, 7);  // Read-only: ignored.
    EXPECT_EQ(Reg(*d, reg), 0u);
  }
  // An 8-byte access covers two registers, low first.
  ASSERT_TRUE(WriteN(*d, kBar0, kRegDmaAddrLo, 8, 0x0000000123456789).has_value());
  EXPECT_EQ(Reg(*d, kRegDmaAddrLo), 0x23456789u);
  EXPECT_EQ(Reg(*d, kRegDmaAddrHi), 0x1u);
  EXPECT_EQ(ReadN(*d, kBar0, kRegId, 8), (uint64_t{0xdeadbeef} << 32) | kIdValue);
}

TEST(PciTestDeviceTest, Bar0BadAccessesAreEinval) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  std::byte b[8] = {};
  const auto read = [&](uint64_t offset, size_t size) {
    return Errno(d->RegionRead(kBar0, offset, std::span(b, size)));
  };
  const auto write = [&](uint64_t offset, size_t size) {
    return Errno(d->RegionWrite(kBar0, offset, std::span<const std::byte>(b, size)));
  };
  EXPECT_EQ(read(kRegScratch, 2), EINVAL);  // Registers are 4 or 8 bytes.
  EXPECT_EQ(read(kRegScratch, 1), EINVAL);
  EXPECT_EQ(write(kRegScratch + 1, 4), EINVAL);
  EXPECT_EQ(read(kRegScratch, 8), EINVAL);  // 8 bytes need 8-byte alignment.
  EXPECT_EQ(read(kRegsEnd, 4), EINVAL);     // Between the registers and the buffer.
  EXPECT_EQ(write(0x7fc, 4), EINVAL);
  EXPECT_EQ(read(kRegDmaCount, 8), EINVAL);  // Runs past the last register.
  EXPECT_EQ(read(kBufferOffset + 1, 2), EINVAL);  // Misaligned.
  EXPECT_EQ(write(kBufferOffset + 4, 8), EINVAL);
  EXPECT_EQ(read(kBufferOffset, 3), EINVAL);
  EXPECT_EQ(read(kBar0Size - 4, 8), EINVAL);
  EXPECT_EQ(read(kBar0Size, 1), EINVAL);
  EXPECT_EQ(read(0, 0), EINVAL);
  EXPECT_EQ(Reg(*d, kRegScratch), 0u);
}

TEST(PciTestDeviceTest, BufferAnyAlignedWidth) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  ASSERT_TRUE(WriteN(*d, kBar0, kBufferOffset, 8, 0x0807060504030201).has_value());
  EXPECT_EQ(ReadN(*d, kBar0, kBufferOffset, 1), 0x01u);
  EXPECT_EQ(ReadN(*d, kBar0, kBufferOffset + 2, 2), 0x0403u);
  EXPECT_EQ(ReadN(*d, kBar0, kBufferOffset + 4, 4), 0x08070605u);
  ASSERT_TRUE(WriteN(*d, kBar0, kBufferOffset + 1, 1, 0xaa).has_value());
  ASSERT_TRUE(WriteN(*d, kBar0, kBar0Size - 2, 2, 0xbbcc).has_value());
  EXPECT_EQ(ReadN(*d, kBar0, kBufferOffset, 4), 0x0403aa01u);
  EXPECT_EQ(ReadN(*d, kBar0, kBar0Size - 8, 8), uint64_t{0xbbcc} << 48);
}

TEST(PciTestDeviceTest, Bar1IoBytes) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  ASSERT_TRUE(WriteN(*d, kBar1, 0, 4, 0x44332211).has_value());
  ASSERT_TRUE(WriteN(*d, kBar1, 15, 1, 0x99).has_value());
  ASSERT_TRUE(WriteN(*d, kBar1, 5, 2, 0x7766).has_value());  // Any alignment.
  EXPECT_EQ(ReadN(*d, kBar1, 1, 2), 0x3322u);
  EXPECT_EQ(ReadN(*d, kBar1, 4, 4), 0x00776600u);
  EXPECT_EQ(ReadN(*d, kBar1, 15, 1), 0x99u);
  std::byte b[4];
  EXPECT_EQ(Errno(d->RegionRead(kBar1, 14, b)), EINVAL);
  EXPECT_EQ(Errno(d->RegionWrite(kBar1, 16, std::span<const std::byte>(b, 1))), EINVAL);
}

TEST(PciTestDeviceTest, Bar2TableIsStoredAndPbaIsReadOnly) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  ASSERT_TRUE(WriteN(*d, kBar2, 16 * 3 + 12, 4, 1).has_value());  // Vector 3 control.
  EXPECT_EQ(ReadN(*d, kBar2, 16 * 3 + 12, 4), 1u);
  ASSERT_TRUE(WriteN(*d, kBar2, kMsixPbaOffset, 8, ~uint64_t{0}).has_value());  // Dropped.
  EXPECT_EQ(ReadN(*d, kBar2, kMsixPbaOffset, 8), 0u);
  EXPECT_EQ(ReadN(*d, kBar2, kBar2Size - 8, 8), 0u);
  std::byte b[8];
  EXPECT_EQ(Errno(d->RegionRead(kBar2, kBar2Size - 4, b)), EINVAL);
}

TEST(PciTestDeviceTest, Bar3MmapAndTrappedAccessesShareMemory) {
  FakeDma dma;
  auto d = MakeDevice(dma, PciTestDevice::Type::kMmap);
  auto info = d->GetRegionInfo(kBar3);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->flags, VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
                             VFIO_REGION_INFO_FLAG_MMAP);
  EXPECT_EQ(info->size, kBar3Size);
  ASSERT_EQ(info->sparse_mmap.size(), 1u);
  EXPECT_EQ(info->sparse_mmap[0].offset, kBar3TrappedSize);
  EXPECT_EQ(info->sparse_mmap[0].size, kBar3Size - kBar3TrappedSize);
  ASSERT_GE(info->mmap_fd, 0);
  // Map the sparse area as a client would, through the fd the reply carries.
  auto user = Mapping::Map(info->mmap_fd, static_cast<off_t>(info->mmap_offset + kBar3TrappedSize),
                           kBar3Size - kBar3TrappedSize, PROT_READ | PROT_WRITE, MAP_SHARED);
  ASSERT_TRUE(user.has_value());
  const uint32_t pattern = 0xcafef00d;
  std::memcpy(user->data() + 0x10, &pattern, 4);
  EXPECT_EQ(ReadN(*d, kBar3, kBar3TrappedSize + 0x10, 4), pattern);
  ASSERT_TRUE(WriteN(*d, kBar3, kBar3Size - 8, 8, 0x1122334455667788).has_value());
  uint64_t seen = 0;
  std::memcpy(&seen, user->data() + user->size() - 8, 8);
  EXPECT_EQ(seen, 0x1122334455667788u);
  // The trapped page is plain memory too.
  ASSERT_TRUE(WriteN(*d, kBar3, 0, 4, 0xabcd).has_value());
  EXPECT_EQ(ReadN(*d, kBar3, 0, 4), 0xabcdu);
  std::byte b[2];
  EXPECT_EQ(Errno(d->RegionRead(kBar3, kBar3Size - 1, b)), EINVAL);
  // Reset clears the BAR3 memory, mmap included.
  ASSERT_TRUE(d->Reset().has_value());
  std::memcpy(&seen, user->data() + user->size() - 8, 8);
  EXPECT_EQ(seen, 0u);
}

TEST(PciTestDeviceTest, BarAccessesAreServedWithDecodingDisabled) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  ASSERT_EQ(Config(*d, PCI_COMMAND, 2) & (PCI_COMMAND_MEMORY | PCI_COMMAND_IO), 0u);
  EXPECT_EQ(Reg(*d, kRegId), kIdValue);
  EXPECT_TRUE(WriteN(*d, kBar1, 0, 1, 1).has_value());
}

TEST(PciTestDeviceTest, ResetRestoresPowerOn) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  SetReg(*d, kRegScratch, 5);
  SetReg(*d, kRegDmaLen, 9);
  SetReg(*d, kRegIrqRaise, 0);  // INTx status.
  ASSERT_TRUE(WriteN(*d, kBar0, kBufferOffset, 8, 0x1234).has_value());
  ASSERT_TRUE(WriteN(*d, kBar1, 0, 4, 0x1234).has_value());
  ASSERT_TRUE(WriteN(*d, kBar2, 0, 4, 0x1234).has_value());
  SetConfig(*d, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  SetConfig(*d, PCI_BASE_ADDRESS_0, 4, 0xfe000000);
  ASSERT_TRUE(d->Reset().has_value());
  EXPECT_EQ(Reg(*d, kRegId), kIdValue);
  EXPECT_EQ(Reg(*d, kRegScratch), 0u);
  EXPECT_EQ(Reg(*d, kRegDmaLen), 0u);
  EXPECT_EQ(Reg(*d, kRegIrqStatus), 0u);
  EXPECT_EQ(ReadN(*d, kBar0, kBufferOffset, 8), 0u);
  EXPECT_EQ(ReadN(*d, kBar1, 0, 4), 0u);
  EXPECT_EQ(ReadN(*d, kBar2, 0, 4), 0u);
  EXPECT_EQ(Config(*d, PCI_COMMAND, 2), 0u);
  EXPECT_EQ(Config(*d, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 0u);
  EXPECT_EQ(Config(*d, PCI_BASE_ADDRESS_0, 4), 0u);
  EXPECT_EQ(Config(*d, PCI_VENDOR_ID, 2), kVendorId);
}

TEST(PciTestDeviceTest, CloseKeepsRegisterState) {
  FakeDma dma;
  auto d = MakeDevice(dma);
  ASSERT_TRUE(d->Open({}).has_value());
  SetReg(*d, kRegScratch, 42);
  ASSERT_TRUE(WriteN(*d, kBar0, kBufferOffset, 4, 7).has_value());
  d->Close();
  ASSERT_TRUE(d->Open({}).has_value());
  EXPECT_EQ(Reg(*d, kRegScratch), 42u);
  EXPECT_EQ(ReadN(*d, kBar0, kBufferOffset, 4), 7u);
}

TEST(PciTestDeviceTest, ParentDriverProbesBothTypes) {
  PciTestParentDriver driver({});
  EXPECT_EQ(driver.parent_name(), "test_pci");
  EXPECT_EQ(driver.max_instances(), 4u);
  EXPECT_EQ(driver.device_api(), "vfio-pci");
  const auto types = driver.types();
  ASSERT_EQ(types.size(), 2u);
  EXPECT_EQ(types[0].sysfs_name, "basic");
  EXPECT_EQ(types[1].sysfs_name, "mmap");
  FakeDma dma;
  for (const MdevTypeSpec& type : types) {
    auto ops = driver.Probe(ProbeContext{.type = type, .uuid = Uuid{}, .dma = dma});
    ASSERT_TRUE(ops.has_value());
    auto bar3 = (*ops)->GetRegionInfo(kBar3);
    EXPECT_EQ(bar3->size, type.sysfs_name == "mmap" ? kBar3Size : 0u);
    EXPECT_FALSE((*ops)->pins_pages());
    EXPECT_EQ((*ops)->dma_unmap_listener(), nullptr);
    EXPECT_NE((*ops)->migration(), nullptr);
  }
  const MdevTypeSpec unknown{"nope", "", ""};
  auto bad = driver.Probe(ProbeContext{.type = unknown, .uuid = Uuid{}, .dma = dma});
  EXPECT_EQ(bad.error().code, EINVAL);
  PciTestParentDriver named({.parent_name = "other", .max_instances = 2});
  EXPECT_EQ(named.parent_name(), "other");
  EXPECT_EQ(named.max_instances(), 2u);
}

}  // namespace
}  // namespace umdev::testing
