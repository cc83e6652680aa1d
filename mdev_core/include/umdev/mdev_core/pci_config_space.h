// PciConfigSpace: an emulated type-0 PCI/PCIe configuration space for vendor drivers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <utility>

#include "umdev/common/error.h"

namespace umdev {

// The identity fields of the type-0 header (PCI Local Bus Spec 3.0, §6.2.1).
// All are read-only to the guest.
struct PciHeaderSpec {
  uint16_t vendor_id = 0;
  uint16_t device_id = 0;
  uint16_t subsystem_vendor_id = 0;
  uint16_t subsystem_id = 0;
  uint8_t revision_id = 0;
  uint8_t base_class = 0;      // Class code byte 0x0b.
  uint8_t sub_class = 0;       // Class code byte 0x0a.
  uint8_t prog_if = 0;         // Class code byte 0x09.
  bool multifunction = false;  // Header type bit 7.
};

// Interrupt Pin register values (§6.2.4): which INTx# the function uses.
enum class PciInterruptPin : uint8_t { kNone = 0, kIntA = 1, kIntB = 2, kIntC = 3, kIntD = 4 };

enum class PciBarType : uint8_t {
  kIo,     // I/O space; size 4 bytes .. 64 KiB.
  kMem32,  // 32-bit memory space; size 16 bytes .. 2 GiB.
  kMem64,  // 64-bit memory space, occupies this slot and the next; 16 bytes .. 2^63.
};

struct PciBarSpec {
  PciBarType type = PciBarType::kMem32;
  uint64_t size = 0;          // A power of two within the type's range.
  bool prefetchable = false;  // Memory BARs only.
};

// What a BAR (or the expansion ROM) is now, as the guest programmed it.
struct PciBarInfo {
  PciBarType type = PciBarType::kMem32;
  bool prefetchable = false;
  uint64_t size = 0;
  uint64_t base = 0;  // Aligned to |size|; all-ones high bits while the guest sizes it.
  // Command IO (I/O BARs) or MEM (memory BARs) is set, the function is in D0,
  // and for the ROM its enable bit is set: accesses to [base, base + size) reach the device.
  bool decoding_enabled = false;

  bool operator==(const PciBarInfo&) const = default;
};

struct PciMsiSpec {
  uint32_t vectors = 1;  // Multiple Message Capable: 1, 2, 4, 8, 16 or 32.
  bool address_64bit = true;
  bool per_vector_masking = false;
};

struct PciMsixSpec {
  uint32_t table_size = 1;    // Entries, 1..2048.
  uint8_t table_bar = 0;      // A memory BAR (the low slot of a 64-bit one).
  uint32_t table_offset = 0;  // 8-byte aligned; the table must fit in the BAR.
  uint8_t pba_bar = 0;
  uint32_t pba_offset = 0;  // 8-byte aligned; the PBA must fit in the BAR.
};

struct PciExpressSpec {
  uint8_t max_payload_size_supported = 0;  // Encoded: 0 = 128 bytes .. 5 = 4096 bytes.
  uint8_t max_link_speed = 1;              // Encoded: 1 = 2.5 GT/s .. 6 = 64 GT/s.
  uint8_t max_link_width = 1;              // Lanes: 1, 2, 4, 8, 12, 16 or 32.
};

// The MSI capability as the guest programmed it (§6.8.1). All zero without one.
struct PciMsiState {
  bool enabled = false;
  uint64_t address = 0;
  uint16_t data = 0;
  uint32_t vectors_enabled = 0;  // 2^Multiple Message Enable (<= capable); 0 without MSI.
  uint32_t mask_bits = 0;        // Zero unless per-vector masking was asked for.

  bool operator==(const PciMsiState&) const = default;
};

// The MSI-X capability's control bits (§6.8.2). The table and PBA live in a
// BAR the vendor emulates.
struct PciMsixState {
  bool enabled = false;
  bool function_masked = false;

  bool operator==(const PciMsixState&) const = default;
};

// PMCSR PowerState (PCI Bus Power Management Interface Spec 1.2, §3.2.4).
// Only D0 and D3hot are supported; the guest's writes of D1/D2 are discarded.
enum class PciPowerState : uint8_t { kD0 = 0, kD3Hot = 3 };

// Hooks a vendor registers to react to guest writes. Each is optional and is
// called after a Write() has been applied in full, once per changed item, with
// the new state, in the order the members are declared. Hooks may call the
// const accessors and Read(); they must not call Write() or Reset().
struct PciConfigObservers {
  std::function<void(uint16_t old_command, uint16_t new_command)> command_changed;
  // Fires when a BAR's base or decoding_enabled changes (a move, or Command
  // IO/MEM or the power state toggling), including the all-ones base a guest
  // writes to size it: map |info| only while info.decoding_enabled.
  // The expansion ROM is not reported here; query ExpansionRom().
  std::function<void(unsigned index, const PciBarInfo& info)> bar_changed;
  std::function<void(const PciMsiState&)> msi_changed;
  std::function<void(const PciMsixState&)> msix_changed;
  std::function<void(PciPowerState)> power_state_changed;
};

// The configuration space of one emulated function: the vendor builds it once
// (constructor, DefineBar(), Add*()), then forwards the guest's config-region
// accesses to Read() and Write(), which apply the read-only, writable and
// write-1-to-clear rules of the PCI specs byte by byte.
//
// Size: 256 bytes, or 4096 once AddPciExpress() has run. The extended space
// has no extended capabilities: it reads 0 and ignores writes.
//
// Set-up calls may come at any time (normally before the device is opened);
// what they define is part of the power-on state that Reset() restores.
//
// Thread-compatible: the vendor serialises all calls, including those made
// from observer hooks.
class PciConfigSpace {
 public:
  static constexpr unsigned kNumBars = 6;
  static constexpr uint32_t kConventionalSize = 256;
  static constexpr uint32_t kExpressSize = 4096;

  explicit PciConfigSpace(const PciHeaderSpec& header,
                          PciInterruptPin pin = PciInterruptPin::kNone);

  // --- Set-up -------------------------------------------------------------

  // Implements BAR |index| (0..5); a kMem64 BAR also takes slot index + 1.
  // Errors: EINVAL index out of range, kMem64 at index 5, size not a power of
  //         two or outside the type's range, prefetchable I/O;
  //         EEXIST a slot it needs is already defined.
  Result<void> DefineBar(unsigned index, const PciBarSpec& spec);
  // Implements the expansion ROM BAR (§6.2.5.2); without it 0x30 reads 0.
  // Errors: EINVAL size not a power of two in 2 KiB..16 MiB; EEXIST defined.
  Result<void> DefineExpansionRom(uint32_t size);

  // Each Add*() appends a capability at the next free dword in 0x40..0xff,
  // links it into the list at 0x34, sets Status.Capabilities List, and returns
  // the capability's offset. Common errors: ENOSPC it does not fit before
  // 0x100; EEXIST (all but vendor-specific) one is already present.
  //
  // PM 1.2 capability: D0 and D3hot only, no PME#, No_Soft_Reset set.
  Result<uint8_t> AddPowerManagement();
  // MSI (§6.8.1). Errors: EINVAL vectors not a power of two in 1..32.
  Result<uint8_t> AddMsi(const PciMsiSpec& spec);
  // MSI-X (§6.8.2). Errors: EINVAL table size outside 1..2048, BIR not a
  // defined memory BAR, offset not 8-byte aligned, table or PBA overflowing it.
  Result<uint8_t> AddMsix(const PciMsixSpec& spec);
  // PCI Express capability version 2, endpoint, no slot; grows the space to
  // 4096 bytes. Errors: EINVAL a spec field out of range.
  Result<uint8_t> AddPciExpress(const PciExpressSpec& spec = {});
  // Vendor-specific capability (ID 0x09): ID, next, length, then |payload|,
  // all read-only. Errors: ENOSPC also when 3 + payload exceeds 255 bytes.
  Result<uint8_t> AddVendorSpecific(std::span<const uint8_t> payload);

  // Replaces all observer hooks.
  void SetObservers(PciConfigObservers observers) { observers_ = std::move(observers); }

  // --- Guest accesses -----------------------------------------------------

  // Copies |out.size()| bytes at |offset| (little-endian registers). Any width
  // and alignment. Errors: EINVAL the range leaves the space.
  Result<void> Read(uint64_t offset, std::span<std::byte> out) const;
  // Applies |data| at |offset| through the write and write-1-to-clear masks,
  // then the registers' side rules (MSI MME clamp, PM state filter), then the
  // observers. Errors: EINVAL the range leaves the space (nothing is written).
  Result<void> Write(uint64_t offset, std::span<const std::byte> data);

  Result<uint8_t> Read8(uint64_t offset) const;
  Result<uint16_t> Read16(uint64_t offset) const;
  Result<uint32_t> Read32(uint64_t offset) const;
  Result<void> Write8(uint64_t offset, uint8_t value);
  Result<void> Write16(uint64_t offset, uint16_t value);
  Result<void> Write32(uint64_t offset, uint32_t value);

  // Returns every register to its power-on value: BARs unprogrammed, command
  // and device-set status 0, capability control fields cleared, D0. Set-up is
  // kept. Observers are not called: the vendor asked for the reset.
  void Reset();

  // --- Device side --------------------------------------------------------

  // Sets or clears Status bits the device reports (Interrupt Status, the error
  // bits the guest clears by writing 1). Bits the header owns are unaffected.
  void UpdateStatus(uint16_t bits, bool set);

  // --- Queries ------------------------------------------------------------

  uint32_t size() const { return size_; }
  uint16_t command() const;
  uint16_t status() const;
  // BAR |index| as programmed; nullopt for an unimplemented slot, the upper
  // half of a 64-bit BAR, or an index >= kNumBars.
  std::optional<PciBarInfo> Bar(unsigned index) const;
  std::optional<PciBarInfo> ExpansionRom() const;
  PciMsiState msi() const;
  PciMsixState msix() const;
  PciPowerState power_state() const;

 private:
  struct BarSlot {
    bool implemented = false;
    bool upper_half = false;  // The high dword of the 64-bit BAR in the slot below.
    PciBarSpec spec;
  };
  // What the observers watch, captured before and after a write.
  struct Snapshot {
    uint16_t command = 0;
    std::array<std::optional<PciBarInfo>, kNumBars> bars;
    PciMsiState msi;
    PciMsixState msix;
    PciPowerState power_state = PciPowerState::kD0;
  };

  // Set-up helpers: write both the live and the power-on image.
  void InitBytes(uint32_t offset, uint64_t value, unsigned width);
  void SetMask(std::array<uint8_t, kExpressSize>& mask, uint32_t offset, uint64_t bits,
               unsigned width);
  Result<uint8_t> AllocateCapability(uint8_t id, uint32_t length);
  Result<void> CheckMsixRegion(uint8_t bar, uint32_t offset, uint64_t length,
                               const char* what) const;

  uint64_t Get(uint32_t offset, unsigned width) const;
  void Put(uint32_t offset, uint64_t value, unsigned width);
  Result<void> CheckRange(uint64_t offset, size_t length, const char* what) const;
  void ApplyRegisterRules(const Snapshot& before);
  Snapshot TakeSnapshot() const;
  void Notify(const Snapshot& before, const Snapshot& after) const;
  uint64_t BarBase(unsigned index) const;
  bool MemoryDecodingAllowed() const;

  uint32_t size_ = kConventionalSize;
  std::array<uint8_t, kExpressSize> config_{};
  std::array<uint8_t, kExpressSize> power_on_{};
  std::array<uint8_t, kExpressSize> write_mask_{};
  std::array<uint8_t, kExpressSize> w1c_mask_{};
  std::array<BarSlot, kNumBars> bars_{};
  uint32_t rom_size_ = 0;  // 0: no expansion ROM.

  // Capability list state; 0 = absent.
  uint8_t last_cap_ = 0;
  uint32_t next_free_cap_ = 0x40;
  uint8_t pm_cap_ = 0;
  uint8_t msi_cap_ = 0;
  uint8_t msix_cap_ = 0;
  uint8_t pcie_cap_ = 0;
  uint32_t msi_vectors_capable_ = 0;

  PciConfigObservers observers_;
};

}  // namespace umdev
