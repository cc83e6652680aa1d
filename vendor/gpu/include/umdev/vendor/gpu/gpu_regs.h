// The guest-visible programming model of the sliced accelerator (docs/gpu.md,
// "The guest-visible device"): PCI identity, BAR layout, BAR0 registers and
// the 64-byte command descriptors. A guest driver and the tests rely on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace umdev::vendor::gpu::regs {

// --- PCI identity ------------------------------------------------------------
inline constexpr uint16_t kDefaultVendorId = 0x554d;  // "UM": unassigned; overridable per parent.
inline constexpr uint16_t kDefaultDeviceId = 0x4750;  // "GP"
inline constexpr uint8_t kClassAccelerator = 0x12;  // Processing accelerator.

// --- BARs --------------------------------------------------------------------
inline constexpr uint64_t kBar0Size = 0x1000;  // 32-bit MMIO, trapped.
// BAR2: 64-bit prefetchable, the slice rounded up to a power of two; the
// slice's bytes [0, MEM_SIZE) are one sparse-mmap area.
inline constexpr uint32_t kMsixVectors = 4;
inline constexpr uint32_t kVectorFence = 0;
inline constexpr uint32_t kVectorError = 1;
inline constexpr uint32_t kMsixTableOffset = 0x800;  // In BAR0.
inline constexpr uint32_t kMsixPbaOffset = 0xc00;
// BAR4: the doorbell page (CAPS bit 3), 32-bit MMIO, one sparse-mmap area
// over a page the device polls, so that a guest rings without a trap.
inline constexpr uint32_t kDoorbellBar = 4;
inline constexpr uint64_t kDoorbellPageSize = 0x1000;
inline constexpr uint32_t kDbTail = 0x000;     // Guest: the ring's new tail (QUEUE_TAIL).
inline constexpr uint32_t kDbPolling = 0x040;  // Device: 1 while DB_TAIL is polled, else 0.

// --- BAR0 registers: 4-byte accesses at 4-aligned offsets or 8-byte at
// 8-aligned ones (two registers, low first). Unlisted offsets below the
// MSI-X table read 0 and ignore writes.
inline constexpr uint32_t kRegId = 0x000;  // RO
inline constexpr uint32_t kIdValue = 0x50474d55;  // "UMGP"
inline constexpr uint32_t kRegVersion = 0x004;    // RO
inline constexpr uint32_t kVersionValue = 1u << 16;
inline constexpr uint32_t kRegCaps = 0x008;  // RO
inline constexpr uint32_t kCapSpirv = 1u << 0;        // DISPATCH runs any SPIR-V.
inline constexpr uint32_t kCapBuiltinOnly = 1u << 1;  // Built-in kernels only (CPU).
inline constexpr uint32_t kCapMmap = 1u << 2;         // BAR2 is mmappable.
inline constexpr uint32_t kCapDoorbellPage = 1u << 3;  // BAR4 is a polled doorbell page.
inline constexpr uint32_t kRegComputeShare = 0x00c;  // RO, per mille
inline constexpr uint32_t kRegMemSize = 0x010;       // RO 64
inline constexpr uint32_t kRegQueueBase = 0x020;     // RW 64, 4 KiB aligned
inline constexpr uint32_t kRegQueueSize = 0x028;     // RW, entries
inline constexpr uint32_t kRegQueueCtrl = 0x02c;     // RW
inline constexpr uint32_t kQueueEnable = 1u << 0;
// With ENABLE: the tail comes from the doorbell page's DB_TAIL (polled).
inline constexpr uint32_t kQueueDoorbellPage = 1u << 1;
inline constexpr uint32_t kRegQueueHead = 0x030;  // RO
inline constexpr uint32_t kRegQueueTail = 0x034;  // RW
inline constexpr uint32_t kRegDoorbell = 0x038;   // WO
inline constexpr uint32_t kRegFenceDone = 0x040;  // RO 64
inline constexpr uint32_t kRegIntStatus = 0x048;  // RW1C
inline constexpr uint32_t kRegIntMask = 0x04c;    // RW
inline constexpr uint32_t kIntFence = 1u << 0;
inline constexpr uint32_t kIntError = 1u << 1;
inline constexpr uint32_t kRegErrorCode = 0x050;   // RO: positive errno
inline constexpr uint32_t kRegErrorIndex = 0x054;  // RO: QUEUE_HEAD of the failed entry
inline constexpr uint32_t kRegErrorClear = 0x058;  // WO: 1 skips the failed entry
inline constexpr uint32_t kRegReset = 0x060;       // WO: 1 resets the function
inline constexpr uint32_t kRegStatBusyNs = 0x080;  // RO 64
inline constexpr uint32_t kRegStatCommands = 0x088;  // RO 64
inline constexpr uint32_t kRegStatBytes = 0x090;     // RO 64
inline constexpr uint32_t kRegStatErrors = 0x098;    // RO 64
inline constexpr uint32_t kRegsEnd = 0x0a0;

inline constexpr uint32_t kMinQueueSize = 16;
inline constexpr uint32_t kMaxQueueSize = 65536;
inline constexpr uint64_t kQueueAlign = 4096;

// --- Command descriptors: kEntrySize bytes, little-endian ----------------------
inline constexpr uint32_t kEntrySize = 64;
inline constexpr uint32_t kOpCopy = 1;
inline constexpr uint32_t kOpFill = 2;
inline constexpr uint32_t kOpDispatch = 3;
inline constexpr uint32_t kOpFence = 4;
// Offsets inside an entry.
inline constexpr uint32_t kEntryOpcode = 0;  // u32
inline constexpr uint32_t kEntryFlags = 4;   // u32
// COPY: u64 src, u64 dst, u64 size. Flag bits choose guest IOVA over slice offset.
inline constexpr uint32_t kCopySrc = 8;
inline constexpr uint32_t kCopyDst = 16;
inline constexpr uint32_t kCopySize = 24;
inline constexpr uint32_t kCopySrcGuest = 1u << 0;
inline constexpr uint32_t kCopyDstGuest = 1u << 1;
// FILL: u64 offset, u64 size, u32 pattern.
inline constexpr uint32_t kFillOffset = 8;
inline constexpr uint32_t kFillSize = 16;
inline constexpr uint32_t kFillPattern = 24;
// DISPATCH: u64 module_offset, u32 module_size, u32 reserved, u64
// entry_offset (NUL-terminated, < kMaxEntryName bytes), u64 args_offset. At
// args_offset: u32 groups_x, groups_y, groups_z, binding_count, push_size,
// u32 reserved, then binding_count x {u32 binding, u32 reserved, u64 offset,
// u64 size}, then push_size bytes. All in slice memory.
inline constexpr uint32_t kDispatchModuleOffset = 8;
inline constexpr uint32_t kDispatchModuleSize = 16;
inline constexpr uint32_t kDispatchEntryOffset = 24;
inline constexpr uint32_t kDispatchArgsOffset = 32;
inline constexpr uint32_t kMaxEntryName = 64;
inline constexpr uint32_t kArgsHeaderSize = 24;
inline constexpr uint32_t kArgsBindingSize = 24;
inline constexpr uint32_t kMaxModuleSize = 1u << 20;
// FENCE: u64 iova (8-aligned), u64 value. Flag bit 0: interrupt.
inline constexpr uint32_t kFenceIova = 8;
inline constexpr uint32_t kFenceValue = 16;
inline constexpr uint32_t kFenceInterrupt = 1u << 0;

// One ring entry being encoded, as a guest driver writes it: fields at the
// offsets above, little-endian (as x86-64 stores them).
struct RingEntry {
  std::byte bytes[kEntrySize] = {};
  RingEntry& U32(uint32_t at, uint32_t value) {
    std::memcpy(bytes + at, &value, sizeof(value));
    return *this;
  }
  RingEntry& U64(uint32_t at, uint64_t value) {
    std::memcpy(bytes + at, &value, sizeof(value));
    return *this;
  }
};

}  // namespace umdev::vendor::gpu::regs
