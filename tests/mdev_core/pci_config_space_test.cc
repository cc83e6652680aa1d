// Tests for PciConfigSpace: the type-0 header, BARs, the expansion ROM and access rules.
#include "umdev/mdev_core/pci_config_space.h"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <array>
#include <cstdint>
#include <vector>

#include "pci_test_util.h"

namespace umdev {
namespace {

using pci_test::ErrnoOf;
using pci_test::kHeader;
using pci_test::Read16;
using pci_test::Read32;
using pci_test::Read8;
using pci_test::SizeProbe;

TEST(PciConfigSpaceTest, HeaderFieldsReadBack) {
  PciConfigSpace config(kHeader, PciInterruptPin::kIntB);

  EXPECT_EQ(Read16(config, PCI_VENDOR_ID), 0x1af4);
  EXPECT_EQ(Read16(config, PCI_DEVICE_ID), 0x10f1);
  EXPECT_EQ(Read32(config, PCI_CLASS_REVISION), 0x07000207u);
  EXPECT_EQ(Read8(config, PCI_HEADER_TYPE), PCI_HEADER_TYPE_NORMAL);
  EXPECT_EQ(Read16(config, PCI_SUBSYSTEM_VENDOR_ID), 0x8086);
  EXPECT_EQ(Read16(config, PCI_SUBSYSTEM_ID), 0x5a5a);
  EXPECT_EQ(Read8(config, PCI_INTERRUPT_PIN), 2);
  EXPECT_EQ(config.command(), 0);
  EXPECT_EQ(config.status(), 0);
  EXPECT_EQ(config.size(), 256u);
}

TEST(PciConfigSpaceTest, MultifunctionSetsHeaderTypeBit7) {
  PciHeaderSpec header = kHeader;
  header.multifunction = true;
  PciConfigSpace config(header);

  EXPECT_EQ(Read8(config, PCI_HEADER_TYPE), 0x80);
  EXPECT_EQ(Read8(config, PCI_INTERRUPT_PIN), 0);  // kNone by default.
}

TEST(PciConfigSpaceTest, ReadOnlyHeaderFieldsIgnoreWrites) {
  PciConfigSpace config(kHeader, PciInterruptPin::kIntA);

  for (const uint32_t offset : {0x00u, 0x08u, 0x2cu, 0x34u}) {
    ASSERT_TRUE(config.Write32(offset, 0xffffffff).has_value());
  }
  ASSERT_TRUE(config.Write8(PCI_INTERRUPT_PIN, 0x04).has_value());
  ASSERT_TRUE(config.Write8(PCI_HEADER_TYPE, 0xff).has_value());

  EXPECT_EQ(Read32(config, 0x00), 0x10f11af4u);
  EXPECT_EQ(Read32(config, 0x08), 0x07000207u);
  EXPECT_EQ(Read32(config, 0x2c), 0x5a5a8086u);
  EXPECT_EQ(Read8(config, PCI_CAPABILITY_LIST), 0);
  EXPECT_EQ(Read8(config, PCI_INTERRUPT_PIN), 1);
  EXPECT_EQ(Read8(config, PCI_HEADER_TYPE), 0);
}

TEST(PciConfigSpaceTest, CommandKeepsOnlyTheWritableBits) {
  PciConfigSpace config(kHeader);

  ASSERT_TRUE(config.Write16(PCI_COMMAND, 0xffff).has_value());

  // IO 0x1, MEM 0x2, MASTER 0x4, PARITY 0x40, SERR 0x100, INTX_DISABLE 0x400.
  EXPECT_EQ(config.command(), 0x0547);
  ASSERT_TRUE(config.Write16(PCI_COMMAND, PCI_COMMAND_MASTER).has_value());
  EXPECT_EQ(config.command(), PCI_COMMAND_MASTER);
}

TEST(PciConfigSpaceTest, StatusErrorBitsClearOnlyWhereOneIsWritten) {
  PciConfigSpace config(kHeader);
  config.UpdateStatus(PCI_STATUS_SIG_SYSTEM_ERROR | PCI_STATUS_DETECTED_PARITY, true);

  ASSERT_TRUE(config.Write16(PCI_STATUS, 0).has_value());
  EXPECT_EQ(config.status(), PCI_STATUS_SIG_SYSTEM_ERROR | PCI_STATUS_DETECTED_PARITY);
  ASSERT_TRUE(config.Write16(PCI_STATUS, PCI_STATUS_DETECTED_PARITY).has_value());

  EXPECT_EQ(config.status(), PCI_STATUS_SIG_SYSTEM_ERROR);
}

TEST(PciConfigSpaceTest, GuestCannotSetStatusBits) {
  PciConfigSpace config(kHeader);

  ASSERT_TRUE(config.Write16(PCI_STATUS, 0xffff).has_value());

  EXPECT_EQ(config.status(), 0);
}

TEST(PciConfigSpaceTest, UpdateStatusDrivesInterruptStatusButNotCapList) {
  PciConfigSpace config(kHeader);
  ASSERT_TRUE(config.AddPowerManagement().has_value());

  config.UpdateStatus(PCI_STATUS_INTERRUPT, true);
  EXPECT_EQ(config.status(), PCI_STATUS_CAP_LIST | PCI_STATUS_INTERRUPT);
  config.UpdateStatus(PCI_STATUS_INTERRUPT | PCI_STATUS_CAP_LIST, false);

  EXPECT_EQ(config.status(), PCI_STATUS_CAP_LIST);
}

TEST(PciConfigSpaceTest, PlainRegistersAreWritable) {
  PciConfigSpace config(kHeader);

  ASSERT_TRUE(config.Write8(PCI_CACHE_LINE_SIZE, 0x10).has_value());
  ASSERT_TRUE(config.Write8(PCI_LATENCY_TIMER, 0x40).has_value());
  ASSERT_TRUE(config.Write8(PCI_INTERRUPT_LINE, 0x0b).has_value());

  EXPECT_EQ(Read8(config, PCI_CACHE_LINE_SIZE), 0x10);
  EXPECT_EQ(Read8(config, PCI_LATENCY_TIMER), 0x40);
  EXPECT_EQ(Read8(config, PCI_INTERRUPT_LINE), 0x0b);
}

TEST(PciConfigSpaceTest, IoBarSizesLikeHardware) {
  PciConfigSpace config(kHeader);
  ASSERT_TRUE(config.DefineBar(0, {.type = PciBarType::kIo, .size = 32}).has_value());

  EXPECT_EQ(Read32(config, PCI_BASE_ADDRESS_0), PCI_BASE_ADDRESS_SPACE_IO);
  EXPECT_EQ(SizeProbe(config, PCI_BASE_ADDRESS_0), 0xffffffe1u);  // ~(32 - 1) | I/O.
}

TEST(PciConfigSpaceTest, Mem32BarSizesLikeHardware) {
  PciConfigSpace config(kHeader);
  ASSERT_TRUE(config.DefineBar(1, {.type = PciBarType::kMem32, .size = 0x1000}).has_value());
  ASSERT_TRUE(
      config.DefineBar(2, {.type = PciBarType::kMem32, .size = 0x100000, .prefetchable = true})
          .has_value());

  EXPECT_EQ(SizeProbe(config, PCI_BASE_ADDRESS_1), 0xfffff000u);
  EXPECT_EQ(SizeProbe(config, PCI_BASE_ADDRESS_2), 0xfff00008u);  // Prefetchable bit 3.
}

TEST(PciConfigSpaceTest, Mem64BarSizesBothDwords) {
  PciConfigSpace config(kHeader);
  ASSERT_TRUE(config.DefineBar(0, {.type = PciBarType::kMem64, .size = 0x4000}).has_value());
  // 8 GiB: larger than 4 GiB, so the size shows in the upper dword only.
  ASSERT_TRUE(
      config
          .DefineBar(2,
                     {.type = PciBarType::kMem64, .size = uint64_t{8} << 30, .prefetchable = true})
          .has_value());

  EXPECT_EQ(SizeProbe(config, PCI_BASE_ADDRESS_0), 0xffffc004u);
  EXPECT_EQ(SizeProbe(config, PCI_BASE_ADDRESS_1), 0xffffffffu);
  EXPECT_EQ(SizeProbe(config, PCI_BASE_ADDRESS_2), 0x0000000cu);  // 64-bit | prefetchable.
  EXPECT_EQ(SizeProbe(config, PCI_BASE_ADDRESS_3), 0xfffffffeu);
}

TEST(PciConfigSpaceTest, BarBaseIsStoredAlignedToSize) {
  PciConfigSpace config(kHeader);
  ASSERT_TRUE(config.DefineBar(0, {.type = PciBarType::kMem32, .size = 0x1000}).has_value());

  ASSERT_TRUE(config.Write32(PCI_BASE_ADDRESS_0, 0xfebc1234).has_value());

  EXPECT_EQ(Read32(config, PCI_BASE_ADDRESS_0), 0xfebc1000u);
  ASSERT_TRUE(config.Bar(0).has_value());
  EXPECT_EQ(config.Bar(0)->base, 0xfebc1000u);
  EXPECT_EQ(config.Bar(0)->size, 0x1000u);
}

TEST(PciConfigSpaceTest, Mem64BarBaseCombinesBothDwords) {
  PciConfigSpace config(kHeader);
  ASSERT_TRUE(
      config.DefineBar(4, {.type = PciBarType::kMem64, .size = 0x10000, .prefetchable = true})
          .has_value());

  ASSERT_TRUE(config.Write32(PCI_BASE_ADDRESS_4, 0xc0000000).has_value());
  ASSERT_TRUE(config.Write32(PCI_BASE_ADDRESS_5, 0x00000080).has_value());

  const auto bar = config.Bar(4);
  ASSERT_TRUE(bar.has_value());
  EXPECT_EQ(bar->base, 0x80c0000000u);
  EXPECT_EQ(bar->type, PciBarType::kMem64);
  EXPECT_TRUE(bar->prefetchable);
  EXPECT_FALSE(config.Bar(5).has_value());  // The upper half is not a BAR of its own.
}

TEST(PciConfigSpaceTest, BarDecodingFollowsTheCommandSpaceBits) {
  PciConfigSpace config(kHeader);
  ASSERT_TRUE(config.DefineBar(0, {.type = PciBarType::kIo, .size = 8}).has_value());
  ASSERT_TRUE(config.DefineBar(1, {.type = PciBarType::kMem32, .size = 0x1000}).has_value());

  ASSERT_TRUE(config.Write16(PCI_COMMAND, PCI_COMMAND_MEMORY).has_value());
  EXPECT_FALSE(config.Bar(0)->decoding_enabled);
  EXPECT_TRUE(config.Bar(1)->decoding_enabled);
  ASSERT_TRUE(config.Write16(PCI_COMMAND, PCI_COMMAND_IO).has_value());

  EXPECT_TRUE(config.Bar(0)->decoding_enabled);
  EXPECT_FALSE(config.Bar(1)->decoding_enabled);
}

TEST(PciConfigSpaceTest, NonPowerOfTwoBarSizeIsRejected) {
  PciConfigSpace config(kHeader);

  auto result = config.DefineBar(0, {.type = PciBarType::kMem32, .size = 0x3000});

  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(ErrnoOf(result), EINVAL);
  EXPECT_FALSE(config.Bar(0).has_value());
}

TEST(PciConfigSpaceTest, BarSizesOutsideTheTypeRangeAreRejected) {
  PciConfigSpace config(kHeader);

  EXPECT_EQ(ErrnoOf(config.DefineBar(0, {.type = PciBarType::kIo, .size = 2})), EINVAL);
  EXPECT_EQ(ErrnoOf(config.DefineBar(0, {.type = PciBarType::kIo, .size = 0x20000})), EINVAL);
  EXPECT_EQ(ErrnoOf(config.DefineBar(0, {.type = PciBarType::kMem32, .size = 8})), EINVAL);
  EXPECT_EQ(ErrnoOf(config.DefineBar(0, {.type = PciBarType::kMem32, .size = uint64_t{1} << 32})),
            EINVAL);
  EXPECT_EQ(ErrnoOf(config.DefineBar(0, {.type = PciBarType::kMem64, .size = 0})), EINVAL);
}

TEST(PciConfigSpaceTest, BadBarSlotsAreRejected) {
  PciConfigSpace config(kHeader);

  EXPECT_EQ(ErrnoOf(config.DefineBar(6, {.type = PciBarType::kMem32, .size = 0x1000})), EINVAL);
  EXPECT_EQ(ErrnoOf(config.DefineBar(5, {.type = PciBarType::kMem64, .size = 0x1000})), EINVAL);
  EXPECT_EQ(
      ErrnoOf(config.DefineBar(0, {.type = PciBarType::kIo, .size = 8, .prefetchable = true})),
      EINVAL);
}

TEST(PciConfigSpaceTest, OverlappingBarDefinitionsAreRejected) {
  PciConfigSpace config(kHeader);
  ASSERT_TRUE(config.DefineBar(1, {.type = PciBarType::kMem64, .size = 0x1000}).has_value());

  EXPECT_EQ(ErrnoOf(config.DefineBar(1, {.type = PciBarType::kIo, .size = 8})), EEXIST);
  EXPECT_EQ(ErrnoOf(config.DefineBar(2, {.type = PciBarType::kIo, .size = 8})), EEXIST);
  EXPECT_EQ(ErrnoOf(config.DefineBar(0, {.type = PciBarType::kMem64, .size = 0x1000})), EEXIST);
}

TEST(PciConfigSpaceTest, UnimplementedBarsReadZeroAndIgnoreWrites) {
  PciConfigSpace config(kHeader);
  ASSERT_TRUE(config.DefineBar(0, {.type = PciBarType::kMem32, .size = 0x1000}).has_value());

  EXPECT_EQ(SizeProbe(config, PCI_BASE_ADDRESS_1), 0u);
  EXPECT_EQ(SizeProbe(config, PCI_BASE_ADDRESS_5), 0u);
  EXPECT_FALSE(config.Bar(1).has_value());
  EXPECT_FALSE(config.Bar(6).has_value());
}

TEST(PciConfigSpaceTest, MissingExpansionRomReadsZero) {
  PciConfigSpace config(kHeader);

  EXPECT_EQ(SizeProbe(config, PCI_ROM_ADDRESS), 0u);
  EXPECT_FALSE(config.ExpansionRom().has_value());
}

TEST(PciConfigSpaceTest, ExpansionRomSizesAndDecodesOnlyWhenEnabled) {
  PciConfigSpace config(kHeader);
  ASSERT_TRUE(config.DefineExpansionRom(0x8000).has_value());

  EXPECT_EQ(SizeProbe(config, PCI_ROM_ADDRESS), 0xffff8001u);  // Enable bit included.
  ASSERT_TRUE(config.Write32(PCI_ROM_ADDRESS, 0xfe000001).has_value());
  EXPECT_FALSE(config.ExpansionRom()->decoding_enabled);  // Command.MEM still clear.
  ASSERT_TRUE(config.Write16(PCI_COMMAND, PCI_COMMAND_MEMORY).has_value());

  EXPECT_TRUE(config.ExpansionRom()->decoding_enabled);
  EXPECT_EQ(config.ExpansionRom()->base, 0xfe000000u);
}

TEST(PciConfigSpaceTest, ExpansionRomSizeIsValidated) {
  PciConfigSpace config(kHeader);

  EXPECT_EQ(ErrnoOf(config.DefineExpansionRom(0x400)), EINVAL);
  EXPECT_EQ(ErrnoOf(config.DefineExpansionRom(0x3000)), EINVAL);
  ASSERT_TRUE(config.DefineExpansionRom(0x800).has_value());
  EXPECT_EQ(ErrnoOf(config.DefineExpansionRom(0x800)), EEXIST);
}
TEST(PciConfigSpaceAccessTest, UnalignedWordWriteTouchesOnlyWritableBytes) {
  PciConfigSpace config(kHeader);

  // Latency timer (writable) and header type (read-only) in one access.
  ASSERT_TRUE(config.Write16(PCI_LATENCY_TIMER, 0xff20).has_value());

  EXPECT_EQ(Read8(config, PCI_LATENCY_TIMER), 0x20);
  EXPECT_EQ(Read8(config, PCI_HEADER_TYPE), 0);
}

TEST(PciConfigSpaceAccessTest, UnalignedReadsAreLittleEndian) {
  PciConfigSpace config(kHeader);

  EXPECT_EQ(Read32(config, 0x01), 0x0010f11au);  // Device ID, then command low byte.
  EXPECT_EQ(Read16(config, 0x03), 0x0010);
}

TEST(PciConfigSpaceAccessTest, ArbitrarySpansMatchWordReads) {
  PciConfigSpace config(kHeader);
  std::array<std::byte, 6> bytes{};

  ASSERT_TRUE(config.Read(0x2b, bytes).has_value());

  EXPECT_EQ(bytes[0], std::byte{0x00});  // 0x2b: reserved.
  EXPECT_EQ(bytes[1], std::byte{0x86});
  EXPECT_EQ(bytes[2], std::byte{0x80});
  EXPECT_EQ(bytes[3], std::byte{0x5a});
  EXPECT_EQ(bytes[4], std::byte{0x5a});
  EXPECT_EQ(bytes[5], std::byte{0x00});  // 0x30: no ROM.
}

TEST(PciConfigSpaceAccessTest, SpanWriteAppliesEachByteThroughItsMask) {
  PciConfigSpace config(kHeader);
  const std::array<std::byte, 4> bytes{std::byte{0xaa}, std::byte{0xbb}, std::byte{0xcc},
                                       std::byte{0xdd}};

  ASSERT_TRUE(config.Write(PCI_INTERRUPT_LINE, bytes).has_value());

  EXPECT_EQ(Read32(config, PCI_INTERRUPT_LINE), 0x000000aau);
}

TEST(PciConfigSpaceAccessTest, AccessesLeavingTheSpaceFailWithEinval) {
  PciConfigSpace config(kHeader);
  std::array<std::byte, 2> two{};

  EXPECT_EQ(ErrnoOf(config.Read(0xff, two)), EINVAL);
  EXPECT_EQ(ErrnoOf(config.Read32(0x100)), EINVAL);
  EXPECT_EQ(ErrnoOf(config.Write8(0x100, 0)), EINVAL);
  EXPECT_EQ(ErrnoOf(config.Write16(UINT64_MAX, 0)), EINVAL);
  EXPECT_TRUE(config.Read8(0xff).has_value());
}

TEST(PciConfigSpaceAccessTest, RejectedWriteChangesNothing) {
  PciConfigSpace config(kHeader);
  const std::vector<std::byte> too_long(0xc5, std::byte{0xff});  // 0x3c + 0xc5 = 0x101.

  ASSERT_FALSE(config.Write(PCI_INTERRUPT_LINE, too_long).has_value());

  EXPECT_EQ(Read8(config, PCI_INTERRUPT_LINE), 0);
}
}  // namespace
}  // namespace umdev
