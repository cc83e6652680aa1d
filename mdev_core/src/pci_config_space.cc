// PciConfigSpace: the type-0 header, BARs, masked guest accesses and observers.
#include "umdev/mdev_core/pci_config_space.h"

#include <linux/pci_regs.h>

#include <algorithm>
#include <bit>
#include <fmt/format.h>

namespace umdev {
namespace {

// PCI Local Bus Spec 3.0, §6.2.2: the Command bits a virtual function can
// honour. Special cycles, MWI, VGA snoop, stepping and fast back-to-back are
// hardwired to 0.
constexpr uint16_t kCommandWritable = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
                                      PCI_COMMAND_PARITY | PCI_COMMAND_SERR |
                                      PCI_COMMAND_INTX_DISABLE;

// §6.2.3: the Status error bits are "set by the device, cleared by writing 1".
constexpr uint16_t kStatusWriteOneToClear =
    PCI_STATUS_PARITY | PCI_STATUS_SIG_TARGET_ABORT | PCI_STATUS_REC_TARGET_ABORT |
    PCI_STATUS_REC_MASTER_ABORT | PCI_STATUS_SIG_SYSTEM_ERROR | PCI_STATUS_DETECTED_PARITY;

// Status bits the device model may drive through UpdateStatus().
constexpr uint16_t kStatusDeviceDriven = kStatusWriteOneToClear | PCI_STATUS_INTERRUPT;

constexpr uint32_t BarOffset(unsigned index) { return PCI_BASE_ADDRESS_0 + 4 * index; }

// §6.2.5.1: size limits of each BAR kind. I/O space is 64 KiB on x86; a 32-bit
// BAR must keep at least bit 31 writable; a 64-bit BAR at least bit 63.
Result<void> CheckBarSize(unsigned index, const PciBarSpec& spec) {
  uint64_t min_size = 16;  // Bits 3:0 of a memory BAR are type bits.
  uint64_t max_size = uint64_t{1} << 63;
  if (spec.type == PciBarType::kIo) {
    min_size = 4;  // Bits 1:0 of an I/O BAR are type bits.
    max_size = 64 * 1024;
  } else if (spec.type == PciBarType::kMem32) {
    max_size = uint64_t{1} << 31;
  }
  if (!std::has_single_bit(spec.size) || spec.size < min_size || spec.size > max_size) {
    return Fail(EINVAL, fmt::format("BAR{}: size {:#x} is not a power of two in [{:#x}, {:#x}]",
                                    index, spec.size, min_size, max_size));
  }
  return {};
}

}  // namespace

PciConfigSpace::PciConfigSpace(const PciHeaderSpec& header, PciInterruptPin pin) {
  InitBytes(PCI_VENDOR_ID, header.vendor_id, 2);
  InitBytes(PCI_DEVICE_ID, header.device_id, 2);
  InitBytes(PCI_REVISION_ID, header.revision_id, 1);
  InitBytes(PCI_CLASS_PROG, header.prog_if, 1);
  InitBytes(PCI_CLASS_DEVICE, header.sub_class, 1);
  InitBytes(PCI_CLASS_DEVICE + 1, header.base_class, 1);
  InitBytes(PCI_HEADER_TYPE, PCI_HEADER_TYPE_NORMAL | (header.multifunction ? 0x80 : 0), 1);
  InitBytes(PCI_SUBSYSTEM_VENDOR_ID, header.subsystem_vendor_id, 2);
  InitBytes(PCI_SUBSYSTEM_ID, header.subsystem_id, 2);
  InitBytes(PCI_INTERRUPT_PIN, static_cast<uint8_t>(pin), 1);

  SetMask(write_mask_, PCI_COMMAND, kCommandWritable, 2);
  SetMask(w1c_mask_, PCI_STATUS, kStatusWriteOneToClear, 2);
  // §6.2.4: plain read/write registers; the device ignores their values.
  SetMask(write_mask_, PCI_CACHE_LINE_SIZE, 0xff, 1);
  SetMask(write_mask_, PCI_LATENCY_TIMER, 0xff, 1);
  SetMask(write_mask_, PCI_INTERRUPT_LINE, 0xff, 1);
}

Result<void> PciConfigSpace::DefineBar(unsigned index, const PciBarSpec& spec) {
  if (index >= kNumBars) return Fail(EINVAL, fmt::format("BAR{}: no such BAR", index));
  const bool is_64bit = spec.type == PciBarType::kMem64;
  if (is_64bit && index + 1 >= kNumBars) {
    return Fail(EINVAL, fmt::format("BAR{}: a 64-bit BAR needs the next slot", index));
  }
  if (spec.type == PciBarType::kIo && spec.prefetchable) {
    return Fail(EINVAL, fmt::format("BAR{}: an I/O BAR cannot be prefetchable", index));
  }
  UMDEV_TRY(CheckBarSize(index, spec));
  if (bars_[index].implemented || (is_64bit && bars_[index + 1].implemented)) {
    return Fail(EEXIST, fmt::format("BAR{}: already defined", index));
  }

  uint32_t type_bits = PCI_BASE_ADDRESS_SPACE_IO;
  uint32_t low_address_bits = ~uint32_t{0x3};
  if (spec.type != PciBarType::kIo) {
    type_bits = (is_64bit ? PCI_BASE_ADDRESS_MEM_TYPE_64 : PCI_BASE_ADDRESS_MEM_TYPE_32) |
                (spec.prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0);
    low_address_bits = ~uint32_t{0xf};
  }
  // §6.2.5.1: the bits below the size read as zero, so writing all ones and
  // reading back yields ~(size - 1) plus the type bits; the base therefore
  // stays naturally aligned whatever the guest writes.
  const uint64_t address_mask = ~(spec.size - 1);
  InitBytes(BarOffset(index), type_bits, 4);
  SetMask(write_mask_, BarOffset(index), address_mask & low_address_bits, 4);
  bars_[index] = BarSlot{.implemented = true, .upper_half = false, .spec = spec};
  if (is_64bit) {
    SetMask(write_mask_, BarOffset(index + 1), address_mask >> 32, 4);
    bars_[index + 1] = BarSlot{.implemented = true, .upper_half = true, .spec = spec};
  }
  return {};
}

Result<void> PciConfigSpace::DefineExpansionRom(uint32_t size) {
  // §6.2.5.2: address bits 31:11, so at least 2 KiB; at most 16 MiB.
  constexpr uint32_t kMinRomSize = 2 * 1024;
  constexpr uint32_t kMaxRomSize = 16 * 1024 * 1024;
  if (!std::has_single_bit(size) || size < kMinRomSize || size > kMaxRomSize) {
    return Fail(EINVAL, fmt::format("expansion ROM: size {:#x} is not a power of two in "
                                    "[2 KiB, 16 MiB]",
                                    size));
  }
  if (rom_size_ != 0) return Fail(EEXIST, "expansion ROM: already defined");
  rom_size_ = size;
  SetMask(write_mask_, PCI_ROM_ADDRESS,
          (~(size - 1) & PCI_ROM_ADDRESS_MASK) | PCI_ROM_ADDRESS_ENABLE, 4);
  return {};
}

Result<void> PciConfigSpace::Read(uint64_t offset, std::span<std::byte> out) const {
  UMDEV_TRY(CheckRange(offset, out.size(), "read"));
  std::transform(config_.begin() + static_cast<ptrdiff_t>(offset),
                 config_.begin() + static_cast<ptrdiff_t>(offset + out.size()), out.begin(),
                 [](uint8_t byte) { return std::byte{byte}; });
  return {};
}

Result<void> PciConfigSpace::Write(uint64_t offset, std::span<const std::byte> data) {
  UMDEV_TRY(CheckRange(offset, data.size(), "write"));
  const Snapshot before = TakeSnapshot();
  for (size_t i = 0; i < data.size(); ++i) {
    const size_t at = offset + i;
    const auto value = std::to_integer<uint8_t>(data[i]);
    const uint8_t kept = config_[at] & ~write_mask_[at];
    const uint8_t written = value & write_mask_[at];
    const uint8_t cleared = value & w1c_mask_[at];
    config_[at] = (kept | written) & ~cleared;
  }
  ApplyRegisterRules(before);
  Notify(before, TakeSnapshot());
  return {};
}

Result<uint8_t> PciConfigSpace::Read8(uint64_t offset) const {
  UMDEV_TRY(CheckRange(offset, 1, "read"));
  return config_[offset];
}

Result<uint16_t> PciConfigSpace::Read16(uint64_t offset) const {
  UMDEV_TRY(CheckRange(offset, 2, "read"));
  return static_cast<uint16_t>(Get(static_cast<uint32_t>(offset), 2));
}

Result<uint32_t> PciConfigSpace::Read32(uint64_t offset) const {
  UMDEV_TRY(CheckRange(offset, 4, "read"));
  return static_cast<uint32_t>(Get(static_cast<uint32_t>(offset), 4));
}

Result<void> PciConfigSpace::Write8(uint64_t offset, uint8_t value) {
  const std::array<std::byte, 1> bytes{std::byte{value}};
  return Write(offset, bytes);
}

Result<void> PciConfigSpace::Write16(uint64_t offset, uint16_t value) {
  const std::array<std::byte, 2> bytes{std::byte(value & 0xff), std::byte(value >> 8)};
  return Write(offset, bytes);
}

Result<void> PciConfigSpace::Write32(uint64_t offset, uint32_t value) {
  const std::array<std::byte, 4> bytes{std::byte(value & 0xff), std::byte((value >> 8) & 0xff),
                                       std::byte((value >> 16) & 0xff), std::byte(value >> 24)};
  return Write(offset, bytes);
}

void PciConfigSpace::Reset() { config_ = power_on_; }

void PciConfigSpace::UpdateStatus(uint16_t bits, bool set) {
  const uint16_t driven = bits & kStatusDeviceDriven;
  const uint16_t status_now = status();
  Put(PCI_STATUS, set ? (status_now | driven) : (status_now & ~driven), 2);
}

uint16_t PciConfigSpace::command() const { return static_cast<uint16_t>(Get(PCI_COMMAND, 2)); }

uint16_t PciConfigSpace::status() const { return static_cast<uint16_t>(Get(PCI_STATUS, 2)); }

std::optional<PciBarInfo> PciConfigSpace::Bar(unsigned index) const {
  if (index >= kNumBars || !bars_[index].implemented || bars_[index].upper_half) {
    return std::nullopt;
  }
  const PciBarSpec& spec = bars_[index].spec;
  const uint16_t enable_bit = spec.type == PciBarType::kIo ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
  return PciBarInfo{.type = spec.type,
                    .prefetchable = spec.prefetchable,
                    .size = spec.size,
                    .base = BarBase(index),
                    .decoding_enabled = (command() & enable_bit) != 0 && MemoryDecodingAllowed()};
}

std::optional<PciBarInfo> PciConfigSpace::ExpansionRom() const {
  if (rom_size_ == 0) return std::nullopt;
  const auto rom = static_cast<uint32_t>(Get(PCI_ROM_ADDRESS, 4));
  // §6.2.5.2: the ROM decodes only when both its enable bit and Command.MEM are set.
  const bool enabled = (rom & PCI_ROM_ADDRESS_ENABLE) != 0 &&
                       (command() & PCI_COMMAND_MEMORY) != 0 && MemoryDecodingAllowed();
  return PciBarInfo{.type = PciBarType::kMem32,
                    .prefetchable = false,
                    .size = rom_size_,
                    .base = rom & PCI_ROM_ADDRESS_MASK,
                    .decoding_enabled = enabled};
}

void PciConfigSpace::InitBytes(uint32_t offset, uint64_t value, unsigned width) {
  for (unsigned i = 0; i < width; ++i) {
    const auto byte = static_cast<uint8_t>(value >> (8 * i));
    config_[offset + i] = byte;
    power_on_[offset + i] = byte;
  }
}

void PciConfigSpace::SetMask(std::array<uint8_t, kExpressSize>& mask, uint32_t offset,
                             uint64_t bits, unsigned width) {
  for (unsigned i = 0; i < width; ++i) mask[offset + i] = static_cast<uint8_t>(bits >> (8 * i));
}

uint64_t PciConfigSpace::Get(uint32_t offset, unsigned width) const {
  uint64_t value = 0;
  for (unsigned i = 0; i < width; ++i) value |= uint64_t{config_[offset + i]} << (8 * i);
  return value;
}

void PciConfigSpace::Put(uint32_t offset, uint64_t value, unsigned width) {
  for (unsigned i = 0; i < width; ++i) config_[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

Result<void> PciConfigSpace::CheckRange(uint64_t offset, size_t length, const char* what) const {
  if (offset > size_ || length > size_ - offset) {
    return Fail(EINVAL, fmt::format("config space {} of {} bytes at {:#x}: outside [0, {:#x})",
                                    what, length, offset, size_));
  }
  return {};
}

uint64_t PciConfigSpace::BarBase(unsigned index) const {
  const uint64_t low = Get(BarOffset(index), 4);
  switch (bars_[index].spec.type) {
    case PciBarType::kIo:
      return low & ~uint64_t{0x3};
    case PciBarType::kMem32:
      return low & ~uint64_t{0xf};
    case PciBarType::kMem64:
      return (low & ~uint64_t{0xf}) | (Get(BarOffset(index + 1), 4) << 32);
  }
  return 0;
}

// PCI Bus PM Interface Spec 1.2, §5.4.1 (D3hot): only configuration accesses
// are accepted, so no BAR decodes whatever the Command register says.
bool PciConfigSpace::MemoryDecodingAllowed() const { return power_state() == PciPowerState::kD0; }

PciConfigSpace::Snapshot PciConfigSpace::TakeSnapshot() const {
  Snapshot snapshot{
      .command = command(), .bars = {}, .msi = msi(), .msix = msix(), .power_state = power_state()};
  for (unsigned i = 0; i < kNumBars; ++i) snapshot.bars[i] = Bar(i);
  return snapshot;
}

void PciConfigSpace::Notify(const Snapshot& before, const Snapshot& after) const {
  if (observers_.command_changed && before.command != after.command) {
    observers_.command_changed(before.command, after.command);
  }
  if (observers_.bar_changed) {
    for (unsigned i = 0; i < kNumBars; ++i) {
      if (after.bars[i].has_value() && before.bars[i] != after.bars[i]) {
        observers_.bar_changed(i, *after.bars[i]);
      }
    }
  }
  if (observers_.msi_changed && before.msi != after.msi) observers_.msi_changed(after.msi);
  if (observers_.msix_changed && before.msix != after.msix) observers_.msix_changed(after.msix);
  if (observers_.power_state_changed && before.power_state != after.power_state) {
    observers_.power_state_changed(after.power_state);
  }
}

}  // namespace umdev
