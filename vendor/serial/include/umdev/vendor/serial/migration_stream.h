// The mtty migration stream: a versioned, portable encoding of every port's
// UART state, written field by field in little-endian order.
//
// Layout, version 1:
//   header (24 bytes): u64 magic, u32 version, u32 port count,
//                      u32 port record size, u32 flags (0)
//   per port (48 bytes): u8 IER, LCR, MCR, FCR, SCR, MSR inputs, MSR deltas,
//                      u8 status (bit 0 overrun, 1 THRE latched, 2 line idle),
//                      u16 divisor, u8 far-end kind, u8 RX count, u8 RX[16],
//                      u8 TX count, u8 TX[16], u8 reserved[3] (0)
// FIFO bytes are stored oldest first; unused FIFO bytes are 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/vendor/serial/far_end.h"
#include "umdev/vendor/serial/uart_16550.h"

namespace umdev::vendor::serial {

inline constexpr uint64_t kStreamMagic = 0x5954545645444d55;  // "UMDEVTTY" read as LE.
inline constexpr uint32_t kStreamVersion = 1;
inline constexpr size_t kStreamHeaderSize = 24;
inline constexpr size_t kStreamPortSize = 48;

// One port as it travels.
struct PortSnapshot {
  UartState uart;
  FarEndKind far_end = FarEndKind::kLoopback;
};

inline constexpr size_t StreamSize(size_t ports) {
  return kStreamHeaderSize + ports * kStreamPortSize;
}

std::vector<std::byte> EncodeStreamHeader(uint32_t ports);
std::vector<std::byte> EncodePorts(std::span<const PortSnapshot> ports);

// Checks a complete header for a device with |ports| ports. Errors: EFAULT
// wrong magic, version, port count, record size or flags (the kernel's mtty
// refuses a mismatched header with EFAULT); EINVAL |header| is short.
Result<void> ValidateStreamHeader(std::span<const std::byte> header, uint32_t ports);

// Decodes a whole stream (header included) for a device with |ports| ports
// whose far ends are |far_ends|. Errors: EINVAL wrong size, a field out of
// range (FIFO count above 16, or above 1 with the FIFO off; reserved bits),
// or a far-end kind other than this device's; the header's errors.
Result<std::vector<PortSnapshot>> DecodeStream(std::span<const std::byte> stream,
                                               std::span<const FarEndKind> far_ends);

}  // namespace umdev::vendor::serial
