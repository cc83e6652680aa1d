// Tests for PciConfigSpace capabilities, Reset() and the observer hooks.
#include "umdev/mdev_core/pci_config_space.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <array>
#include <cstdint>
#include <fmt/format.h>
#include <string>
#include <vector>

#include "pci_test_util.h"

namespace umdev {
namespace {

using pci_test::CapabilityIds;
using pci_test::ErrnoOf;
using pci_test::kHeader;
using pci_test::Read16;
using pci_test::Read32;
using pci_test::Read8;
using ::testing::ElementsAre;

// A device with every capability kind, in the order a vendor adds them.
class CapabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(config_.DefineBar(0, {.type = PciBarType::kMem64, .size = 0x4000}).has_value());
  }
  PciMsixSpec MsixInBar0() const {
    return {
        .table_size = 64, .table_bar = 0, .table_offset = 0x0, .pba_bar = 0, .pba_offset = 0x2000};
  }

  PciConfigSpace config_{kHeader, PciInterruptPin::kIntA};
};

TEST_F(CapabilityTest, NoCapabilitiesMeansClearListBitAndNullPointer) {
  EXPECT_EQ(config_.status() & PCI_STATUS_CAP_LIST, 0);
  EXPECT_EQ(Read8(config_, PCI_CAPABILITY_LIST), 0);
}

TEST_F(CapabilityTest, ChainFromPointerVisitsEveryCapabilityInOrder) {
  const std::array<uint8_t, 3> vendor_bytes{0xaa, 0xbb, 0xcc};
  ASSERT_TRUE(config_.AddPowerManagement().has_value());
  ASSERT_TRUE(config_.AddMsi({.vectors = 4}).has_value());
  ASSERT_TRUE(config_.AddMsix(MsixInBar0()).has_value());
  ASSERT_TRUE(config_.AddPciExpress().has_value());
  ASSERT_TRUE(config_.AddVendorSpecific(vendor_bytes).has_value());

  std::vector<uint8_t> offsets;
  const std::vector<uint8_t> ids = CapabilityIds(config_, &offsets);

  EXPECT_THAT(ids, ElementsAre(PCI_CAP_ID_PM, PCI_CAP_ID_MSI, PCI_CAP_ID_MSIX, PCI_CAP_ID_EXP,
                               PCI_CAP_ID_VNDR));
  // PM (8) at 0x40, 64-bit MSI (14 bytes, rounded to 16) at 0x48, MSI-X (12) at 0x58,
  // PCIe (60) at 0x64, vendor-specific after it, all dword aligned.
  EXPECT_THAT(offsets, ElementsAre(0x40, 0x48, 0x58, 0x64, 0xa0));
  EXPECT_NE(config_.status() & PCI_STATUS_CAP_LIST, 0);
}

TEST_F(CapabilityTest, VendorSpecificCarriesLengthAndReadOnlyPayload) {
  const std::array<uint8_t, 3> vendor_bytes{0xaa, 0xbb, 0xcc};
  auto cap = config_.AddVendorSpecific(vendor_bytes);
  ASSERT_TRUE(cap.has_value());

  ASSERT_TRUE(config_.Write32(*cap, 0).has_value());

  EXPECT_EQ(Read32(config_, *cap), 0xaa060009u);  // ID 9, next 0, length 6, payload[0].
  EXPECT_EQ(Read16(config_, *cap + 4u), 0xccbb);
}

TEST_F(CapabilityTest, RunningOutOfSpaceFailsWithEnospcAndKeepsTheList) {
  const std::vector<uint8_t> payload(125, 0x5a);  // 128 bytes with the header.
  ASSERT_TRUE(config_.AddVendorSpecific(payload).has_value());

  auto second = config_.AddVendorSpecific(payload);  // Only 64 bytes remain.

  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(ErrnoOf(second), ENOSPC);
  EXPECT_THAT(CapabilityIds(config_, nullptr), ElementsAre(PCI_CAP_ID_VNDR));
}

TEST_F(CapabilityTest, OversizedVendorCapabilityFailsWithEnospc) {
  const std::vector<uint8_t> payload(253, 0);  // 256 bytes: too long for the length byte.

  EXPECT_EQ(ErrnoOf(config_.AddVendorSpecific(payload)), ENOSPC);
}

TEST_F(CapabilityTest, DuplicateCapabilitiesAreRejected) {
  ASSERT_TRUE(config_.AddMsi({.vectors = 1}).has_value());
  ASSERT_TRUE(config_.AddPowerManagement().has_value());

  EXPECT_EQ(ErrnoOf(config_.AddMsi({.vectors = 1})), EEXIST);
  EXPECT_EQ(ErrnoOf(config_.AddPowerManagement()), EEXIST);
}

TEST_F(CapabilityTest, MsiEnableAddressAndDataAreProgrammable) {
  auto cap = config_.AddMsi({.vectors = 1, .address_64bit = true});
  ASSERT_TRUE(cap.has_value());

  ASSERT_TRUE(config_.Write32(*cap + PCI_MSI_ADDRESS_LO, 0xfee01003).has_value());
  ASSERT_TRUE(config_.Write32(*cap + PCI_MSI_ADDRESS_HI, 0x1).has_value());
  ASSERT_TRUE(config_.Write16(*cap + PCI_MSI_DATA_64, 0x4041).has_value());
  ASSERT_TRUE(config_.Write16(*cap + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE).has_value());

  const PciMsiState msi = config_.msi();
  EXPECT_TRUE(msi.enabled);
  EXPECT_EQ(msi.address, 0x1fee01000u);  // Bits 1:0 are read-only zero.
  EXPECT_EQ(msi.data, 0x4041);
  EXPECT_EQ(msi.vectors_enabled, 1u);
}

TEST_F(CapabilityTest, Msi32BitLayoutHasNoUpperAddress) {
  auto cap = config_.AddMsi({.vectors = 2, .address_64bit = false});
  ASSERT_TRUE(cap.has_value());

  ASSERT_TRUE(config_.Write32(*cap + PCI_MSI_ADDRESS_LO, 0xfee00000).has_value());
  ASSERT_TRUE(config_.Write16(*cap + PCI_MSI_DATA_32, 0x0031).has_value());

  EXPECT_EQ(Read16(config_, *cap + PCI_MSI_FLAGS) & PCI_MSI_FLAGS_64BIT, 0);
  EXPECT_EQ(config_.msi().address, 0xfee00000u);
  EXPECT_EQ(config_.msi().data, 0x0031);
}

TEST_F(CapabilityTest, MsiMultipleMessageEnableIsClampedToCapable) {
  auto cap = config_.AddMsi({.vectors = 4});
  ASSERT_TRUE(cap.has_value());

  // MME = 5 (32 vectors) and an attempt to change MMC to 5 as well.
  ASSERT_TRUE(config_.Write16(*cap + PCI_MSI_FLAGS, 0x005b).has_value());

  const uint16_t control = Read16(config_, *cap + PCI_MSI_FLAGS);
  EXPECT_EQ((control & PCI_MSI_FLAGS_QSIZE) >> 4, 2);  // Clamped to 4 vectors.
  EXPECT_EQ((control & PCI_MSI_FLAGS_QMASK) >> 1, 2);  // Capable is read-only.
  EXPECT_EQ(config_.msi().vectors_enabled, 4u);
  EXPECT_TRUE(config_.msi().enabled);
}

TEST_F(CapabilityTest, MsiMaskBitsCoverOnlyCapableVectors) {
  auto cap = config_.AddMsi({.vectors = 4, .address_64bit = true, .per_vector_masking = true});
  ASSERT_TRUE(cap.has_value());

  ASSERT_TRUE(config_.Write32(*cap + PCI_MSI_MASK_64, 0xffffffff).has_value());
  ASSERT_TRUE(config_.Write32(*cap + PCI_MSI_PENDING_64, 0xffffffff).has_value());

  EXPECT_EQ(config_.msi().mask_bits, 0xfu);
  EXPECT_EQ(Read32(config_, *cap + PCI_MSI_PENDING_64), 0u);
}

TEST_F(CapabilityTest, MsiVectorCountIsValidated) {
  EXPECT_EQ(ErrnoOf(config_.AddMsi({.vectors = 0})), EINVAL);
  EXPECT_EQ(ErrnoOf(config_.AddMsi({.vectors = 3})), EINVAL);
  EXPECT_EQ(ErrnoOf(config_.AddMsi({.vectors = 64})), EINVAL);
}

TEST_F(CapabilityTest, MsixEnableAndFunctionMaskAreWritableTableFieldsAreNot) {
  auto cap = config_.AddMsix(MsixInBar0());
  ASSERT_TRUE(cap.has_value());

  ASSERT_TRUE(config_.Write16(*cap + PCI_MSIX_FLAGS, 0xffff).has_value());
  ASSERT_TRUE(config_.Write32(*cap + PCI_MSIX_TABLE, 0xffffffff).has_value());

  EXPECT_EQ(Read16(config_, *cap + PCI_MSIX_FLAGS), 0xc03f);  // Enable, mask, N - 1 = 63.
  EXPECT_TRUE(config_.msix().enabled);
  EXPECT_TRUE(config_.msix().function_masked);
  EXPECT_EQ(Read32(config_, *cap + PCI_MSIX_TABLE), 0u);  // BAR0, offset 0.
  EXPECT_EQ(Read32(config_, *cap + PCI_MSIX_PBA), 0x2000u);
  ASSERT_TRUE(config_.Write16(*cap + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE).has_value());
  EXPECT_FALSE(config_.msix().function_masked);
}

TEST_F(CapabilityTest, MsixPlacementIsValidated) {
  PciMsixSpec spec = MsixInBar0();
  spec.table_bar = 2;  // Not defined.
  EXPECT_EQ(ErrnoOf(config_.AddMsix(spec)), EINVAL);
  spec = MsixInBar0();
  spec.table_offset = 0x4;  // Not 8-byte aligned.
  EXPECT_EQ(ErrnoOf(config_.AddMsix(spec)), EINVAL);
  spec = MsixInBar0();
  spec.table_size = 1025;  // 16 KiB + 16 overflows the 16 KiB BAR.
  EXPECT_EQ(ErrnoOf(config_.AddMsix(spec)), EINVAL);
  spec = MsixInBar0();
  spec.pba_offset = 0x3f8;  // Inside the 64-entry table.
  EXPECT_EQ(ErrnoOf(config_.AddMsix(spec)), EINVAL);
  spec = MsixInBar0();
  spec.table_size = 0;
  EXPECT_EQ(ErrnoOf(config_.AddMsix(spec)), EINVAL);
  spec = MsixInBar0();
  spec.pba_bar = 1;  // Upper half of BAR0.
  EXPECT_EQ(ErrnoOf(config_.AddMsix(spec)), EINVAL);
}

TEST_F(CapabilityTest, MsixTableInAnIoBarIsRejected) {
  ASSERT_TRUE(config_.DefineBar(2, {.type = PciBarType::kIo, .size = 0x100}).has_value());
  PciMsixSpec spec = MsixInBar0();
  spec.table_size = 1;
  spec.table_bar = 2;

  EXPECT_EQ(ErrnoOf(config_.AddMsix(spec)), EINVAL);
}

TEST_F(CapabilityTest, PowerStateMovesBetweenD0AndD3hotOnly) {
  auto cap = config_.AddPowerManagement();
  ASSERT_TRUE(cap.has_value());
  EXPECT_EQ(Read16(config_, *cap + PCI_PM_PMC), 3);  // PM 1.2, no D1/D2/PME.

  ASSERT_TRUE(config_.Write16(*cap + PCI_PM_CTRL, 0xffff).has_value());
  EXPECT_EQ(config_.power_state(), PciPowerState::kD3Hot);
  EXPECT_EQ(Read16(config_, *cap + PCI_PM_CTRL), PCI_PM_CTRL_NO_SOFT_RESET | 3);
  ASSERT_TRUE(config_.Write16(*cap + PCI_PM_CTRL, 1).has_value());  // D1: unsupported.
  EXPECT_EQ(Read16(config_, *cap + PCI_PM_CTRL), PCI_PM_CTRL_NO_SOFT_RESET | 3);
  ASSERT_TRUE(config_.Write16(*cap + PCI_PM_CTRL, 0).has_value());

  EXPECT_EQ(config_.power_state(), PciPowerState::kD0);
  EXPECT_EQ(Read16(config_, *cap + PCI_PM_CTRL), PCI_PM_CTRL_NO_SOFT_RESET);
}

TEST_F(CapabilityTest, BarsDoNotDecodeInD3hot) {
  auto cap = config_.AddPowerManagement();
  ASSERT_TRUE(cap.has_value());
  ASSERT_TRUE(config_.Write16(PCI_COMMAND, PCI_COMMAND_MEMORY).has_value());
  ASSERT_TRUE(config_.Bar(0)->decoding_enabled);

  ASSERT_TRUE(config_.Write16(*cap + PCI_PM_CTRL, 3).has_value());

  EXPECT_FALSE(config_.Bar(0)->decoding_enabled);
}

TEST_F(CapabilityTest, PciExpressGrowsTheSpaceWithAnEmptyExtendedList) {
  ASSERT_TRUE(config_.AddPciExpress().has_value());

  EXPECT_EQ(config_.size(), 4096u);
  ASSERT_TRUE(config_.Write32(0x100, 0xffffffff).has_value());
  EXPECT_EQ(Read32(config_, 0x100), 0u);
  EXPECT_EQ(Read32(config_, 0xffc), 0u);
  EXPECT_EQ(ErrnoOf(config_.Read8(0x1000)), EINVAL);
}

TEST_F(CapabilityTest, PciExpressDescribesAVersion2EndpointWithItsLink) {
  auto cap = config_.AddPciExpress(
      {.max_payload_size_supported = 1, .max_link_speed = 3, .max_link_width = 8});
  ASSERT_TRUE(cap.has_value());

  EXPECT_EQ(Read16(config_, *cap + PCI_EXP_FLAGS), 0x0002);  // Version 2, endpoint.
  EXPECT_EQ(Read32(config_, *cap + PCI_EXP_DEVCAP), PCI_EXP_DEVCAP_RBER | 1u);
  EXPECT_EQ(Read32(config_, *cap + PCI_EXP_LNKCAP), 0x83u);  // x8 at 8 GT/s.
  EXPECT_EQ(Read16(config_, *cap + PCI_EXP_LNKSTA), 0x83);
  EXPECT_EQ(Read32(config_, *cap + PCI_EXP_LNKCAP2), 0xeu);  // 2.5, 5 and 8 GT/s.
  EXPECT_EQ(Read16(config_, *cap + PCI_EXP_LNKCTL2), 3);
}

TEST_F(CapabilityTest, PciExpressDeviceControlKeepsOnlyWritableFields) {
  auto cap = config_.AddPciExpress();
  ASSERT_TRUE(cap.has_value());
  EXPECT_EQ(Read16(config_, *cap + PCI_EXP_DEVCTL), 0x2810);  // Spec defaults.

  ASSERT_TRUE(config_.Write16(*cap + PCI_EXP_DEVCTL, 0xffff).has_value());

  // Everything but extended tag, phantom functions, aux power and FLR.
  EXPECT_EQ(Read16(config_, *cap + PCI_EXP_DEVCTL), 0x78ff);
  ASSERT_TRUE(config_.Write16(*cap + PCI_EXP_LNKSTA, 0).has_value());
  EXPECT_EQ(Read16(config_, *cap + PCI_EXP_LNKSTA), 0x11);  // Read-only x1 at 2.5 GT/s.
}

TEST_F(CapabilityTest, PciExpressSpecIsValidated) {
  EXPECT_EQ(ErrnoOf(config_.AddPciExpress({.max_payload_size_supported = 6})), EINVAL);
  EXPECT_EQ(ErrnoOf(config_.AddPciExpress({.max_link_speed = 0})), EINVAL);
  EXPECT_EQ(ErrnoOf(config_.AddPciExpress({.max_link_width = 3})), EINVAL);
  EXPECT_EQ(config_.size(), 256u);
}
TEST_F(CapabilityTest, ResetRestoresPowerOnValues) {
  auto pm = config_.AddPowerManagement();
  auto msi = config_.AddMsi({.vectors = 8});
  auto msix = config_.AddMsix(MsixInBar0());
  ASSERT_TRUE(pm.has_value() && msi.has_value() && msix.has_value());
  ASSERT_TRUE(config_.Write32(PCI_BASE_ADDRESS_0, 0xfe000000).has_value());
  ASSERT_TRUE(config_.Write16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER).has_value());
  ASSERT_TRUE(config_.Write8(PCI_INTERRUPT_LINE, 10).has_value());
  ASSERT_TRUE(config_.Write16(*msi + PCI_MSI_FLAGS, 0x0031).has_value());
  ASSERT_TRUE(config_.Write32(*msi + PCI_MSI_ADDRESS_LO, 0xfee00000).has_value());
  ASSERT_TRUE(config_.Write16(*msix + PCI_MSIX_FLAGS, 0xc000).has_value());
  ASSERT_TRUE(config_.Write16(*pm + PCI_PM_CTRL, 3).has_value());
  config_.UpdateStatus(PCI_STATUS_INTERRUPT, true);

  config_.Reset();

  EXPECT_EQ(Read32(config_, PCI_BASE_ADDRESS_0), PCI_BASE_ADDRESS_MEM_TYPE_64);
  EXPECT_EQ(config_.command(), 0);
  EXPECT_EQ(config_.status(), PCI_STATUS_CAP_LIST);
  EXPECT_EQ(Read8(config_, PCI_INTERRUPT_LINE), 0);
  EXPECT_EQ(config_.msi(), (PciMsiState{.vectors_enabled = 1}));
  EXPECT_EQ(config_.msix(), PciMsixState{});
  EXPECT_EQ(config_.power_state(), PciPowerState::kD0);
  EXPECT_EQ(Read16(config_, PCI_VENDOR_ID), 0x1af4);
  EXPECT_THAT(CapabilityIds(config_, nullptr),
              ElementsAre(PCI_CAP_ID_PM, PCI_CAP_ID_MSI, PCI_CAP_ID_MSIX));
}

// Records every observer call as text, in order.
class ObserverTest : public CapabilityTest {
 protected:
  void SetUp() override {
    CapabilityTest::SetUp();
    pm_ = config_.AddPowerManagement().value_or(0);
    msi_ = config_.AddMsi({.vectors = 2}).value_or(0);
    msix_ = config_.AddMsix(MsixInBar0()).value_or(0);
    ASSERT_NE(pm_ * msi_ * msix_, 0);
    config_.SetObservers({
        .command_changed =
            [this](uint16_t old_command, uint16_t new_command) {
              events_.push_back(fmt::format("command {:#x}->{:#x}", old_command, new_command));
            },
        .bar_changed =
            [this](unsigned index, const PciBarInfo& info) {
              events_.push_back(
                  fmt::format("bar{} {:#x} {}", index, info.base, info.decoding_enabled));
            },
        .msi_changed =
            [this](const PciMsiState& msi) {
              events_.push_back(fmt::format("msi {} {:#x} {:#x} {}", msi.enabled, msi.address,
                                            msi.data, msi.vectors_enabled));
            },
        .msix_changed =
            [this](const PciMsixState& msix) {
              events_.push_back(fmt::format("msix {} {}", msix.enabled, msix.function_masked));
            },
        .power_state_changed =
            [this](PciPowerState state) {
              events_.push_back(fmt::format("power {}", static_cast<int>(state)));
            },
    });
  }

  uint8_t pm_ = 0;
  uint8_t msi_ = 0;
  uint8_t msix_ = 0;
  std::vector<std::string> events_;
};

TEST_F(ObserverTest, CommandChangeReportsOldAndNewAndBarDecoding) {
  ASSERT_TRUE(config_.Write16(PCI_COMMAND, PCI_COMMAND_MEMORY).has_value());

  EXPECT_THAT(events_, ElementsAre("command 0x0->0x2", "bar0 0x0 true"));
}

TEST_F(ObserverTest, BarMoveIsReportedOncePerWrite) {
  ASSERT_TRUE(config_.Write32(PCI_BASE_ADDRESS_0, 0xfe000000).has_value());
  ASSERT_TRUE(config_.Write32(PCI_BASE_ADDRESS_1, 0x1).has_value());

  EXPECT_THAT(events_, ElementsAre("bar0 0xfe000000 false", "bar0 0x1fe000000 false"));
}

TEST_F(ObserverTest, MsiProgrammingIsReportedWithTheNewState) {
  ASSERT_TRUE(config_.Write32(msi_ + PCI_MSI_ADDRESS_LO, 0xfee00000).has_value());
  ASSERT_TRUE(config_.Write16(msi_ + PCI_MSI_FLAGS, 0x0011).has_value());

  EXPECT_THAT(events_, ElementsAre("msi false 0xfee00000 0x0 1", "msi true 0xfee00000 0x0 2"));
}

TEST_F(ObserverTest, MsixAndPowerChangesAreReported) {
  ASSERT_TRUE(config_.Write16(msix_ + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_MASKALL).has_value());
  ASSERT_TRUE(config_.Write16(pm_ + PCI_PM_CTRL, 3).has_value());

  EXPECT_THAT(events_, ElementsAre("msix false true", "power 3"));
}

TEST_F(ObserverTest, WritesThatChangeNothingAreSilent) {
  ASSERT_TRUE(config_.Write16(PCI_COMMAND, 0).has_value());
  ASSERT_TRUE(config_.Write32(PCI_VENDOR_ID, 0).has_value());
  ASSERT_TRUE(config_.Write16(pm_ + PCI_PM_CTRL, 2).has_value());  // D2 is discarded.

  EXPECT_TRUE(events_.empty());
}

TEST_F(ObserverTest, ResetDoesNotNotify) {
  ASSERT_TRUE(config_.Write16(PCI_COMMAND, PCI_COMMAND_IO).has_value());
  events_.clear();

  config_.Reset();

  EXPECT_TRUE(events_.empty());
  EXPECT_EQ(config_.command(), 0);
}

}  // namespace
}  // namespace umdev
