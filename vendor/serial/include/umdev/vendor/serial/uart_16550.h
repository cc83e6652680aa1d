// Uart16550: the register model of one National Semiconductor PC16550D UART,
// independent of how it is attached (PCI BAR, far end, interrupt line).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace umdev::vendor::serial {

// Register offsets (PC16550D datasheet, Table II). DLL/DLM share 0 and 1
// with RBR/THR and IER while LCR.DLAB is set.
namespace reg {
inline constexpr uint8_t kRbrThr = 0;
inline constexpr uint8_t kIer = 1;
inline constexpr uint8_t kIirFcr = 2;
inline constexpr uint8_t kLcr = 3;
inline constexpr uint8_t kMcr = 4;
inline constexpr uint8_t kLsr = 5;
inline constexpr uint8_t kMsr = 6;
inline constexpr uint8_t kScr = 7;
inline constexpr uint8_t kCount = 8;
}  // namespace reg

namespace ier {
inline constexpr uint8_t kRxData = 0x01;     // ERBFI
inline constexpr uint8_t kThre = 0x02;       // ETBEI
inline constexpr uint8_t kLineStatus = 0x04; // ELSI
inline constexpr uint8_t kModem = 0x08;      // EDSSI
}  // namespace ier

namespace iir {
inline constexpr uint8_t kNone = 0x01;
inline constexpr uint8_t kModem = 0x00;
inline constexpr uint8_t kThre = 0x02;
inline constexpr uint8_t kRxData = 0x04;
inline constexpr uint8_t kLineStatus = 0x06;
inline constexpr uint8_t kRxTimeout = 0x0c;
inline constexpr uint8_t kFifoEnabled = 0xc0;
}  // namespace iir

namespace fcr {
inline constexpr uint8_t kEnable = 0x01;
inline constexpr uint8_t kClearRx = 0x02;
inline constexpr uint8_t kClearTx = 0x04;
inline constexpr uint8_t kDmaMode = 0x08;
inline constexpr uint8_t kTriggerMask = 0xc0;
}  // namespace fcr

namespace lcr {
inline constexpr uint8_t kDlab = 0x80;
}  // namespace lcr

namespace mcr {
inline constexpr uint8_t kDtr = 0x01;
inline constexpr uint8_t kRts = 0x02;
inline constexpr uint8_t kOut1 = 0x04;
inline constexpr uint8_t kOut2 = 0x08;
inline constexpr uint8_t kLoop = 0x10;
inline constexpr uint8_t kWritable = 0x1f;
}  // namespace mcr

namespace lsr {
inline constexpr uint8_t kDataReady = 0x01;
inline constexpr uint8_t kOverrun = 0x02;
inline constexpr uint8_t kParity = 0x04;
inline constexpr uint8_t kFraming = 0x08;
inline constexpr uint8_t kBreak = 0x10;
inline constexpr uint8_t kThre = 0x20;
inline constexpr uint8_t kTemt = 0x40;
inline constexpr uint8_t kFifoError = 0x80;
}  // namespace lsr

namespace msr {
inline constexpr uint8_t kDeltaCts = 0x01;
inline constexpr uint8_t kDeltaDsr = 0x02;
inline constexpr uint8_t kTrailingRi = 0x04;
inline constexpr uint8_t kDeltaDcd = 0x08;
inline constexpr uint8_t kDeltas = 0x0f;
inline constexpr uint8_t kCts = 0x10;
inline constexpr uint8_t kDsr = 0x20;
inline constexpr uint8_t kRi = 0x40;
inline constexpr uint8_t kDcd = 0x80;
inline constexpr uint8_t kInputs = 0xf0;
}  // namespace msr

// A byte FIFO of the 16550's depth.
class ByteFifo {
 public:
  static constexpr size_t kCapacity = 16;

  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  bool full() const { return count_ == kCapacity; }
  // False (nothing stored) when full.
  bool Push(uint8_t byte);
  // Requires !empty().
  uint8_t Pop();
  // The |i|-th byte from the head; requires i < size().
  uint8_t At(size_t i) const { return bytes_[(head_ + i) % kCapacity]; }
  void Clear() { head_ = count_ = 0; }

 private:
  std::array<uint8_t, kCapacity> bytes_{};
  size_t head_ = 0;
  size_t count_ = 0;
};

// Everything that makes up the UART's state, for migration. Registers that
// are derived (IIR, LSR, the MSR in loopback) are not stored: they follow
// from the rest.
struct UartState {
  uint8_t ier = 0;
  uint8_t lcr = 0;
  uint8_t mcr = 0;
  uint8_t fcr = 0;          // Only the bits that persist: enable, DMA mode, trigger.
  uint8_t scr = 0;
  uint16_t divisor = 0;
  uint8_t msr_inputs = 0;   // Far-end modem lines (msr::kInputs bits).
  uint8_t msr_deltas = 0;   // Delta bits not yet read (msr::kDeltas bits).
  bool overrun = false;     // LSR.OE not yet read.
  bool thre_pending = false;  // The THRE interrupt is latched.
  bool line_idle = false;   // The far end reported no more input for now.
  ByteFifo rx;
  ByteFifo tx;
};

// One PC16550D: RBR/THR with 16-byte FIFOs, IER, IIR with its four priority
// levels, FCR, LCR with the divisor latch, MCR with internal loopback, LSR,
// MSR with delta bits, SCR. The device has no clock: bytes move when the
// owner moves them, and "four character times without input" (the RX
// timeout) is what the owner reports with LineIdle().
//
// Thread-compatible: the owning device serialises every call.
class Uart16550 {
 public:
  Uart16550() { Reset(); }

  // Master reset: every register to its power-on value (datasheet Table IV).
  // The far-end modem inputs are kept (they are wires, not registers).
  void Reset();

  // A guest access to register |offset| (< reg::kCount), with its side effects.
  uint8_t Read(uint8_t offset);
  void Write(uint8_t offset, uint8_t value);
  // The value Read() would return, without side effects (for tests and logs).
  uint8_t Peek(uint8_t offset) const;

  // --- The far end of the line -------------------------------------------

  // Whether the receiver takes bytes from the far end now: not in internal
  // loopback, and the RX FIFO (or the RBR without FIFO) has room. A far end
  // that waits while this is false never overruns.
  bool AcceptsInput() const;
  // How many bytes the receiver can take without overrunning (0 in loopback).
  size_t InputRoom() const;
  // A character arrives from the far end. With no room it is an overrun:
  // LSR.OE is set and the character is lost (FIFO mode) or replaces the RBR
  // (16450 mode), as the datasheet says. Ignored in internal loopback.
  void Receive(uint8_t byte);
  // The far end has nothing more to send for now: a FIFO holding fewer bytes
  // than the trigger level raises the character timeout indication.
  void LineIdle();

  // Bytes the guest transmitted that the far end has not taken yet.
  size_t PendingTx() const { return state_.tx.size(); }
  // Takes the oldest transmitted byte, if any; an emptied transmitter raises
  // THRE (and its interrupt when enabled).
  std::optional<uint8_t> TakeTx();

  // Sets the far-end modem input lines (msr::kCts|kDsr|kRi|kDcd); changes set
  // the delta bits as the datasheet describes (RI: trailing edge only).
  void SetModemInputs(uint8_t lines);

  // --- Derived state -----------------------------------------------------

  // The interrupt output (INTR): an enabled source is pending.
  bool InterruptPending() const { return (Identify() & iir::kNone) == 0; }
  // The MCR outputs the far end sees (0 in internal loopback).
  uint8_t ModemOutputs() const;
  bool fifo_enabled() const { return (state_.fcr & fcr::kEnable) != 0; }
  // The RX FIFO trigger level in bytes: 1, 4, 8 or 14.
  unsigned trigger_level() const;
  uint16_t divisor() const { return state_.divisor; }

  const UartState& state() const { return state_; }
  // Replaces the whole state (migration). The caller validated |state|.
  void Restore(const UartState& state) { state_ = state; }

 private:
  // IIR bits 0-3 for the highest-priority pending source.
  uint8_t Identify() const;
  uint8_t LineStatus() const;
  uint8_t ModemStatus() const;
  // Receiver input from either the far end or the internal loopback.
  void Deliver(uint8_t byte);
  void WriteFcr(uint8_t value);
  void WriteMcr(uint8_t value);
  // Recomputes the modem-status deltas after the effective inputs change.
  void UpdateDeltas(uint8_t old_lines, uint8_t new_lines);
  uint8_t EffectiveModemLines() const;
  void TransmitterEmptied();

  UartState state_;
};

}  // namespace umdev::vendor::serial
