// PciConfigSpace capabilities: list building and the PM, MSI, MSI-X, PCIe and vendor ones.
#include <linux/pci_regs.h>

#include <algorithm>
#include <array>
#include <bit>
#include <fmt/format.h>

#include "umdev/mdev_core/pci_config_space.h"

namespace umdev {
namespace {

// PCI Local Bus Spec 3.0, §6.7: capabilities live after the 64-byte header.
constexpr uint32_t kFirstCapabilityOffset = 0x40;
constexpr uint32_t kMaxVendorCapabilityLength = 0xff;  // Its length field is one byte.

// PCI Bus PM Interface Spec 1.2, §3.2.3: PMC version 011b means "complies with 1.2".
constexpr uint16_t kPmcVersion12 = 3;

// MSI capability lengths (§6.8.1): the message data ends the structure unless
// per-vector masking adds the 32-bit Mask and Pending registers.
constexpr uint32_t kMsiLength32 = PCI_MSI_DATA_32 + 2;
constexpr uint32_t kMsiLength64 = PCI_MSI_DATA_64 + 2;
constexpr uint32_t kMsiMaskedLength32 = PCI_MSI_PENDING_32 + 4;
constexpr uint32_t kMsiMaskedLength64 = PCI_MSI_PENDING_64 + 4;
constexpr unsigned kMsiMmeShift = 4;  // Multiple Message Enable, bits 6:4.
constexpr unsigned kMsiMmcShift = 1;  // Multiple Message Capable, bits 3:1.
constexpr uint32_t kMsiMaxVectors = 32;

constexpr uint32_t kMsixMaxTableSize = 2048;
constexpr uint32_t kMsixPbaEntryBits = 64;  // One QWORD of pending bits per 64 entries.

// PCI Express Base Spec 3.0, §7.8: a version 2 endpoint structure runs to
// Slot Status 2 (+0x3a).
constexpr uint32_t kPciExpressLength = PCI_EXP_SLTSTA2 + 2;
constexpr uint16_t kPciExpressVersion2 = 2;
constexpr unsigned kPciExpressTypeShift = 4;
constexpr unsigned kLinkWidthShift = 4;       // Max/Negotiated Link Width, bits 9:4.
constexpr uint8_t kMaxPayloadEncoding = 5;    // 4096 bytes.
constexpr uint8_t kMaxLinkSpeedEncoding = 6;  // 64 GT/s.

// §7.8.4: Device Control bits an endpoint without phantom functions, extended
// tags, aux power or FLR lets software change; the rest are hardwired to 0.
constexpr uint16_t kDevctlWritable = PCI_EXP_DEVCTL_CERE | PCI_EXP_DEVCTL_NFERE |
                                     PCI_EXP_DEVCTL_FERE | PCI_EXP_DEVCTL_URRE |
                                     PCI_EXP_DEVCTL_RELAX_EN | PCI_EXP_DEVCTL_PAYLOAD |
                                     PCI_EXP_DEVCTL_NOSNOOP_EN | PCI_EXP_DEVCTL_READRQ;
// §7.8.4 defaults: relaxed ordering and no-snoop enabled, 512-byte reads.
constexpr uint16_t kDevctlDefault =
    PCI_EXP_DEVCTL_RELAX_EN | PCI_EXP_DEVCTL_NOSNOOP_EN | PCI_EXP_DEVCTL_READRQ_512B;
// §7.8.5: the error-detected bits are RW1C.
constexpr uint16_t kDevstaWriteOneToClear =
    PCI_EXP_DEVSTA_CED | PCI_EXP_DEVSTA_NFED | PCI_EXP_DEVSTA_FED | PCI_EXP_DEVSTA_URD;
// §7.8.7: Link Control bits meaningful to an endpoint.
constexpr uint16_t kLnkctlWritable =
    PCI_EXP_LNKCTL_ASPMC | PCI_EXP_LNKCTL_RCB | PCI_EXP_LNKCTL_CCC | PCI_EXP_LNKCTL_ES;

bool IsValidLinkWidth(uint8_t lanes) {
  constexpr std::array<uint8_t, 7> kWidths{1, 2, 4, 8, 12, 16, 32};
  return std::find(kWidths.begin(), kWidths.end(), lanes) != kWidths.end();
}

}  // namespace

Result<uint8_t> PciConfigSpace::AllocateCapability(uint8_t id, uint32_t length) {
  const uint32_t offset = next_free_cap_;
  if (length > kConventionalSize - offset) {
    return Fail(ENOSPC, fmt::format("capability {:#04x} of {} bytes: only {} left below 0x100", id,
                                    length, kConventionalSize - offset));
  }
  InitBytes(offset + PCI_CAP_LIST_ID, id, 1);
  InitBytes(offset + PCI_CAP_LIST_NEXT, 0, 1);  // §6.7: 0 ends the list.
  InitBytes(last_cap_ == 0 ? PCI_CAPABILITY_LIST : last_cap_ + PCI_CAP_LIST_NEXT, offset, 1);
  // §6.2.3: Status bit 4 tells software that 0x34 is valid.
  config_[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
  power_on_[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
  last_cap_ = static_cast<uint8_t>(offset);
  // §6.7: each capability starts on a dword boundary (pointer bits 1:0 are reserved).
  next_free_cap_ = (offset + length + 3) & ~uint32_t{3};
  return static_cast<uint8_t>(offset);
}

Result<uint8_t> PciConfigSpace::AddPowerManagement() {
  if (pm_cap_ != 0) return Fail(EEXIST, "PM capability: already present");
  UMDEV_ASSIGN_OR_RETURN(const uint8_t cap, AllocateCapability(PCI_CAP_ID_PM, PCI_PM_SIZEOF));
  // No D1/D2 and no PME#: PMC holds only the version.
  InitBytes(cap + PCI_PM_PMC, kPmcVersion12, 2);
  // §3.2.4: No_Soft_Reset set means D3hot -> D0 keeps the configuration, so
  // the guest need not re-program BARs and the vendor need not reset itself.
  InitBytes(cap + PCI_PM_CTRL, PCI_PM_CTRL_NO_SOFT_RESET, 2);
  SetMask(write_mask_, cap + PCI_PM_CTRL, PCI_PM_CTRL_STATE_MASK, 2);
  pm_cap_ = cap;
  return cap;
}

Result<uint8_t> PciConfigSpace::AddMsi(const PciMsiSpec& spec) {
  if (msi_cap_ != 0) return Fail(EEXIST, "MSI capability: already present");
  if (!std::has_single_bit(spec.vectors) || spec.vectors > kMsiMaxVectors) {
    return Fail(EINVAL, fmt::format("MSI capability: {} vectors is not a power of two in 1..32",
                                    spec.vectors));
  }
  const bool is_64bit = spec.address_64bit;
  const uint32_t length = spec.per_vector_masking
                              ? (is_64bit ? kMsiMaskedLength64 : kMsiMaskedLength32)
                              : (is_64bit ? kMsiLength64 : kMsiLength32);
  UMDEV_ASSIGN_OR_RETURN(const uint8_t cap, AllocateCapability(PCI_CAP_ID_MSI, length));

  const auto capable_log2 = static_cast<uint16_t>(std::countr_zero(spec.vectors));
  const uint16_t control = static_cast<uint16_t>(capable_log2 << kMsiMmcShift) |
                           (is_64bit ? PCI_MSI_FLAGS_64BIT : 0) |
                           (spec.per_vector_masking ? PCI_MSI_FLAGS_MASKBIT : 0);
  InitBytes(cap + PCI_MSI_FLAGS, control, 2);
  // §6.8.1: Enable and Multiple Message Enable are RW; the message address is
  // dword aligned (bits 1:0 read 0); the message data is 16 bits.
  SetMask(write_mask_, cap + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE, 2);
  SetMask(write_mask_, cap + PCI_MSI_ADDRESS_LO, ~uint32_t{0x3}, 4);
  if (is_64bit) SetMask(write_mask_, cap + PCI_MSI_ADDRESS_HI, ~uint32_t{0}, 4);
  SetMask(write_mask_, cap + (is_64bit ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32), 0xffff, 2);
  if (spec.per_vector_masking) {
    // One mask bit per capable vector; the others are reserved (read 0).
    const uint64_t vector_bits = (uint64_t{1} << spec.vectors) - 1;
    SetMask(write_mask_, cap + (is_64bit ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32), vector_bits, 4);
  }
  msi_cap_ = cap;
  msi_vectors_capable_ = spec.vectors;
  return cap;
}

Result<void> PciConfigSpace::CheckMsixRegion(uint8_t bar, uint32_t offset, uint64_t length,
                                             const char* what) const {
  if (bar >= kNumBars || !bars_[bar].implemented || bars_[bar].upper_half ||
      bars_[bar].spec.type == PciBarType::kIo) {
    return Fail(EINVAL, fmt::format("MSI-X {}: BAR{} is not a defined memory BAR", what, bar));
  }
  // §6.8.2: the BIR shares a dword with the offset, whose low 3 bits it takes.
  if (offset % 8 != 0) {
    return Fail(EINVAL, fmt::format("MSI-X {}: offset {:#x} is not 8-byte aligned", what, offset));
  }
  if (offset + length > bars_[bar].spec.size) {
    return Fail(EINVAL, fmt::format("MSI-X {}: [{:#x}, {:#x}) overflows BAR{} of {:#x} bytes", what,
                                    offset, offset + length, bar, bars_[bar].spec.size));
  }
  return {};
}

Result<uint8_t> PciConfigSpace::AddMsix(const PciMsixSpec& spec) {
  if (msix_cap_ != 0) return Fail(EEXIST, "MSI-X capability: already present");
  if (spec.table_size == 0 || spec.table_size > kMsixMaxTableSize) {
    return Fail(EINVAL, fmt::format("MSI-X: table size {} is outside 1..2048", spec.table_size));
  }
  const uint64_t table_length = uint64_t{spec.table_size} * PCI_MSIX_ENTRY_SIZE;
  const uint64_t pba_length = (spec.table_size + kMsixPbaEntryBits - 1) / kMsixPbaEntryBits * 8;
  UMDEV_TRY(CheckMsixRegion(spec.table_bar, spec.table_offset, table_length, "table"));
  UMDEV_TRY(CheckMsixRegion(spec.pba_bar, spec.pba_offset, pba_length, "PBA"));
  const bool overlap = spec.table_bar == spec.pba_bar &&
                       spec.table_offset < spec.pba_offset + pba_length &&
                       spec.pba_offset < spec.table_offset + table_length;
  if (overlap) return Fail(EINVAL, "MSI-X: the table and the PBA overlap");

  UMDEV_ASSIGN_OR_RETURN(const uint8_t cap,
                         AllocateCapability(PCI_CAP_ID_MSIX, PCI_CAP_MSIX_SIZEOF));
  // §6.8.2: Table Size is N - 1 and read-only; only Enable and Function Mask are RW.
  InitBytes(cap + PCI_MSIX_FLAGS, spec.table_size - 1, 2);
  SetMask(write_mask_, cap + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL, 2);
  InitBytes(cap + PCI_MSIX_TABLE, spec.table_offset | spec.table_bar, 4);
  InitBytes(cap + PCI_MSIX_PBA, spec.pba_offset | spec.pba_bar, 4);
  msix_cap_ = cap;
  return cap;
}

Result<uint8_t> PciConfigSpace::AddPciExpress(const PciExpressSpec& spec) {
  if (pcie_cap_ != 0) return Fail(EEXIST, "PCI Express capability: already present");
  if (spec.max_payload_size_supported > kMaxPayloadEncoding || spec.max_link_speed == 0 ||
      spec.max_link_speed > kMaxLinkSpeedEncoding || !IsValidLinkWidth(spec.max_link_width)) {
    return Fail(EINVAL, fmt::format("PCI Express capability: payload {}, speed {}, width {} "
                                    "out of range",
                                    spec.max_payload_size_supported, spec.max_link_speed,
                                    spec.max_link_width));
  }
  UMDEV_ASSIGN_OR_RETURN(const uint8_t cap, AllocateCapability(PCI_CAP_ID_EXP, kPciExpressLength));
  InitBytes(cap + PCI_EXP_FLAGS,
            kPciExpressVersion2 | (PCI_EXP_TYPE_ENDPOINT << kPciExpressTypeShift), 2);
  // §7.8.3: Role-Based Error Reporting is required of 1.1 and later devices.
  InitBytes(cap + PCI_EXP_DEVCAP, spec.max_payload_size_supported | PCI_EXP_DEVCAP_RBER, 4);
  InitBytes(cap + PCI_EXP_DEVCTL, kDevctlDefault, 2);
  SetMask(write_mask_, cap + PCI_EXP_DEVCTL, kDevctlWritable, 2);
  SetMask(w1c_mask_, cap + PCI_EXP_DEVSTA, kDevstaWriteOneToClear, 2);

  // A virtual link is always up at its maximum: Link Status reports the caps.
  const uint32_t speed_and_width =
      spec.max_link_speed | (uint32_t{spec.max_link_width} << kLinkWidthShift);
  InitBytes(cap + PCI_EXP_LNKCAP, speed_and_width, 4);
  SetMask(write_mask_, cap + PCI_EXP_LNKCTL, kLnkctlWritable, 2);
  InitBytes(cap + PCI_EXP_LNKSTA, speed_and_width, 2);
  // §7.8.18: Supported Link Speeds Vector, bit n - 1 for encoding n, from bit 1.
  InitBytes(cap + PCI_EXP_LNKCAP2, ((uint32_t{1} << spec.max_link_speed) - 1) << 1, 4);
  // §7.8.19: Target Link Speed defaults to the highest supported speed.
  InitBytes(cap + PCI_EXP_LNKCTL2, spec.max_link_speed, 2);
  SetMask(write_mask_, cap + PCI_EXP_LNKCTL2, PCI_EXP_LNKCTL2_TLS, 2);

  pcie_cap_ = cap;
  // PCIe Base Spec 3.0, §7.2: a PCI Express function has 4 KiB of config
  // space; §7.9: an all-zero header at 0x100 means no extended capabilities.
  size_ = kExpressSize;
  return cap;
}

Result<uint8_t> PciConfigSpace::AddVendorSpecific(std::span<const uint8_t> payload) {
  // PCI 3.0, Appendix H, ID 09h: ID, next, a length byte, then vendor bytes.
  constexpr uint32_t kHeaderLength = 3;
  const uint64_t length = kHeaderLength + payload.size();
  if (length > kMaxVendorCapabilityLength) {
    return Fail(ENOSPC,
                fmt::format("vendor capability: {} bytes exceed the 255-byte limit", length));
  }
  UMDEV_ASSIGN_OR_RETURN(const uint8_t cap,
                         AllocateCapability(PCI_CAP_ID_VNDR, static_cast<uint32_t>(length)));
  InitBytes(cap + 2, length, 1);
  for (size_t i = 0; i < payload.size(); ++i) {
    InitBytes(static_cast<uint32_t>(cap + kHeaderLength + i), payload[i], 1);
  }
  return cap;
}

PciMsiState PciConfigSpace::msi() const {
  if (msi_cap_ == 0) return {};
  const auto control = static_cast<uint16_t>(Get(msi_cap_ + PCI_MSI_FLAGS, 2));
  const bool is_64bit = (control & PCI_MSI_FLAGS_64BIT) != 0;
  PciMsiState state;
  state.enabled = (control & PCI_MSI_FLAGS_ENABLE) != 0;
  state.address = Get(msi_cap_ + PCI_MSI_ADDRESS_LO, 4);
  if (is_64bit) state.address |= Get(msi_cap_ + PCI_MSI_ADDRESS_HI, 4) << 32;
  state.data =
      static_cast<uint16_t>(Get(msi_cap_ + (is_64bit ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32), 2));
  state.vectors_enabled = 1u << ((control & PCI_MSI_FLAGS_QSIZE) >> kMsiMmeShift);
  if ((control & PCI_MSI_FLAGS_MASKBIT) != 0) {
    state.mask_bits =
        static_cast<uint32_t>(Get(msi_cap_ + (is_64bit ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32), 4));
  }
  return state;
}

PciMsixState PciConfigSpace::msix() const {
  if (msix_cap_ == 0) return {};
  const auto control = static_cast<uint16_t>(Get(msix_cap_ + PCI_MSIX_FLAGS, 2));
  return PciMsixState{.enabled = (control & PCI_MSIX_FLAGS_ENABLE) != 0,
                      .function_masked = (control & PCI_MSIX_FLAGS_MASKALL) != 0};
}

PciPowerState PciConfigSpace::power_state() const {
  if (pm_cap_ == 0) return PciPowerState::kD0;
  const auto state = Get(pm_cap_ + PCI_PM_CTRL, 2) & PCI_PM_CTRL_STATE_MASK;
  return state == 0 ? PciPowerState::kD0 : PciPowerState::kD3Hot;
}

void PciConfigSpace::ApplyRegisterRules(const Snapshot& before) {
  if (msi_cap_ != 0) {
    // §6.8.1.3: software must not enable more vectors than the function is
    // capable of; clamp rather than keep a value msi() could not honour.
    const auto control = static_cast<uint16_t>(Get(msi_cap_ + PCI_MSI_FLAGS, 2));
    const unsigned enabled_log2 = (control & PCI_MSI_FLAGS_QSIZE) >> kMsiMmeShift;
    const auto capable_log2 = static_cast<unsigned>(std::countr_zero(msi_vectors_capable_));
    if (enabled_log2 > capable_log2) {
      const auto clamped =
          static_cast<uint16_t>((control & ~PCI_MSI_FLAGS_QSIZE) | (capable_log2 << kMsiMmeShift));
      Put(msi_cap_ + PCI_MSI_FLAGS, clamped, 2);
    }
  }
  if (pm_cap_ != 0) {
    // PM 1.2 §3.2.4: a write of an unsupported state (D1, D2 here) completes
    // normally but the data is discarded and no state change occurs.
    const auto pmcsr = static_cast<uint16_t>(Get(pm_cap_ + PCI_PM_CTRL, 2));
    const unsigned state = pmcsr & PCI_PM_CTRL_STATE_MASK;
    if (state == 1 || state == 2) {
      Put(pm_cap_ + PCI_PM_CTRL,
          (pmcsr & ~PCI_PM_CTRL_STATE_MASK) | static_cast<uint16_t>(before.power_state), 2);
    }
  }
}

}  // namespace umdev
