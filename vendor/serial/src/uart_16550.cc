// Uart16550: register semantics from the PC16550D datasheet (June 1995),
// sections 8.4 to 8.10 and Table IV, plus what Linux's 8250 probe relies on.
#include "umdev/vendor/serial/uart_16550.h"

namespace umdev::vendor::serial {

bool ByteFifo::Push(uint8_t byte) {
  if (full()) return false;
  bytes_[(head_ + count_) % kCapacity] = byte;
  ++count_;
  return true;
}

uint8_t ByteFifo::Pop() {
  const uint8_t byte = bytes_[head_];
  head_ = (head_ + 1) % kCapacity;
  --count_;
  return byte;
}

void Uart16550::Reset() {
  const uint8_t inputs = state_.msr_inputs;
  state_ = UartState{};
  state_.msr_inputs = inputs;
}

unsigned Uart16550::trigger_level() const {
  switch (state_.fcr & fcr::kTriggerMask) {
    case 0x00:
      return 1;
    case 0x40:
      return 4;
    case 0x80:
      return 8;
    default:
      return 14;
  }
}

uint8_t Uart16550::Identify() const {
  const uint8_t ier = state_.ier;
  if ((ier & ier::kLineStatus) != 0 && state_.overrun) return iir::kLineStatus;
  if ((ier & ier::kRxData) != 0 && !state_.rx.empty()) {
    if (!fifo_enabled() || state_.rx.size() >= trigger_level()) return iir::kRxData;
    if (state_.line_idle) return iir::kRxTimeout;
  }
  if ((ier & ier::kThre) != 0 && state_.thre_pending) return iir::kThre;
  if ((ier & ier::kModem) != 0 && state_.msr_deltas != 0) return iir::kModem;
  return iir::kNone;
}

uint8_t Uart16550::LineStatus() const {
  uint8_t value = 0;
  if (!state_.rx.empty()) value |= lsr::kDataReady;
  if (state_.overrun) value |= lsr::kOverrun;
  // The transmitter shifts a byte out the moment the far end takes it, so
  // the shift register is empty whenever the holding register/FIFO is.
  if (state_.tx.empty()) value |= lsr::kThre | lsr::kTemt;
  return value;
}

uint8_t Uart16550::EffectiveModemLines() const {
  if ((state_.mcr & mcr::kLoop) == 0) return state_.msr_inputs;
  // Internal loopback (datasheet 8.6): the outputs drive the inputs.
  uint8_t lines = 0;
  if ((state_.mcr & mcr::kRts) != 0) lines |= msr::kCts;
  if ((state_.mcr & mcr::kDtr) != 0) lines |= msr::kDsr;
  if ((state_.mcr & mcr::kOut1) != 0) lines |= msr::kRi;
  if ((state_.mcr & mcr::kOut2) != 0) lines |= msr::kDcd;
  return lines;
}

uint8_t Uart16550::ModemStatus() const { return EffectiveModemLines() | state_.msr_deltas; }

uint8_t Uart16550::ModemOutputs() const {
  if ((state_.mcr & mcr::kLoop) != 0) return 0;
  return state_.mcr & (mcr::kDtr | mcr::kRts | mcr::kOut1 | mcr::kOut2);
}

void Uart16550::UpdateDeltas(uint8_t old_lines, uint8_t new_lines) {
  const uint8_t changed = old_lines ^ new_lines;
  if ((changed & msr::kCts) != 0) state_.msr_deltas |= msr::kDeltaCts;
  if ((changed & msr::kDsr) != 0) state_.msr_deltas |= msr::kDeltaDsr;
  if ((changed & msr::kDcd) != 0) state_.msr_deltas |= msr::kDeltaDcd;
  // TERI: RI went from on to off only.
  if ((old_lines & msr::kRi) != 0 && (new_lines & msr::kRi) == 0) {
    state_.msr_deltas |= msr::kTrailingRi;
  }
}

uint8_t Uart16550::Peek(uint8_t offset) const {
  const bool dlab = (state_.lcr & lcr::kDlab) != 0;
  switch (offset) {
    case reg::kRbrThr:
      if (dlab) return static_cast<uint8_t>(state_.divisor & 0xff);
      return state_.rx.empty() ? 0 : state_.rx.At(0);
    case reg::kIer:
      if (dlab) return static_cast<uint8_t>(state_.divisor >> 8);
      return state_.ier;
    case reg::kIirFcr:
      return static_cast<uint8_t>(Identify() | (fifo_enabled() ? iir::kFifoEnabled : 0));
    case reg::kLcr:
      return state_.lcr;
    case reg::kMcr:
      return state_.mcr;
    case reg::kLsr:
      return LineStatus();
    case reg::kMsr:
      return ModemStatus();
    case reg::kScr:
      return state_.scr;
    default:
      return 0xff;
  }
}

uint8_t Uart16550::Read(uint8_t offset) {
  const uint8_t value = Peek(offset);
  const bool dlab = (state_.lcr & lcr::kDlab) != 0;
  switch (offset) {
    case reg::kRbrThr:
      if (!dlab && !state_.rx.empty()) state_.rx.Pop();
      break;
    case reg::kIirFcr:
      // Reading the IIR while it reports THRE is one of THRE's two resets.
      if ((value & 0x0f) == iir::kThre) state_.thre_pending = false;
      break;
    case reg::kLsr:
      state_.overrun = false;
      break;
    case reg::kMsr:
      state_.msr_deltas = 0;
      break;
    default:
      break;
  }
  return value;
}

void Uart16550::Write(uint8_t offset, uint8_t value) {
  const bool dlab = (state_.lcr & lcr::kDlab) != 0;
  switch (offset) {
    case reg::kRbrThr: {
      if (dlab) {
        state_.divisor = static_cast<uint16_t>((state_.divisor & 0xff00) | value);
        return;
      }
      state_.thre_pending = false;
      // Without the FIFO the THR holds one byte; writing a full holding
      // register or FIFO loses the byte, as on the chip.
      const size_t capacity = fifo_enabled() ? ByteFifo::kCapacity : 1;
      if (state_.tx.size() < capacity) state_.tx.Push(value);
      if ((state_.mcr & mcr::kLoop) != 0) {
        while (!state_.tx.empty()) Deliver(state_.tx.Pop());
        state_.line_idle = true;
        TransmitterEmptied();
      }
      return;
    }
    case reg::kIer: {
      if (dlab) {
        state_.divisor = static_cast<uint16_t>((state_.divisor & 0x00ff) | (value << 8));
        return;
      }
      const uint8_t old = state_.ier;
      state_.ier = value & 0x0f;
      // A 16550 asserts THRE when ETBEI is enabled with the transmitter
      // empty (Linux's startup THRE test relies on it).
      if (((old ^ state_.ier) & ier::kThre) != 0) {
        state_.thre_pending = (state_.ier & ier::kThre) != 0 && state_.tx.empty();
      }
      return;
    }
    case reg::kIirFcr:
      WriteFcr(value);
      return;
    case reg::kLcr:
      state_.lcr = value;
      return;
    case reg::kMcr:
      WriteMcr(value);
      return;
    case reg::kScr:
      state_.scr = value;
      return;
    default:  // LSR and MSR writes are factory-test only: ignored.
      return;
  }
}

void Uart16550::WriteFcr(uint8_t value) {
  const bool was_enabled = fifo_enabled();
  const bool enable = (value & fcr::kEnable) != 0;
  const bool had_tx = !state_.tx.empty();
  if (was_enabled != enable) {
    // Changing FCR0 clears both FIFOs (datasheet 8.4).
    state_.rx.Clear();
    state_.tx.Clear();
  }
  if (!enable) {
    // The other bits are programmed only together with FCR0.
    state_.fcr = 0;
  } else {
    state_.fcr = value & (fcr::kEnable | fcr::kDmaMode | fcr::kTriggerMask);
    if ((value & fcr::kClearRx) != 0) state_.rx.Clear();
    if ((value & fcr::kClearTx) != 0) state_.tx.Clear();
  }
  if (state_.rx.empty()) state_.line_idle = false;
  if (had_tx && state_.tx.empty()) TransmitterEmptied();
}

void Uart16550::WriteMcr(uint8_t value) {
  const uint8_t before = EffectiveModemLines();
  state_.mcr = value & mcr::kWritable;
  UpdateDeltas(before, EffectiveModemLines());
}

void Uart16550::SetModemInputs(uint8_t lines) {
  const uint8_t before = EffectiveModemLines();
  state_.msr_inputs = lines & msr::kInputs;
  UpdateDeltas(before, EffectiveModemLines());
}

size_t Uart16550::InputRoom() const {
  if ((state_.mcr & mcr::kLoop) != 0) return 0;
  const size_t capacity = fifo_enabled() ? ByteFifo::kCapacity : 1;
  return capacity - state_.rx.size();
}

bool Uart16550::AcceptsInput() const { return InputRoom() > 0; }

void Uart16550::Receive(uint8_t byte) {
  // In loopback the receiver is disconnected from the line (datasheet 8.6).
  if ((state_.mcr & mcr::kLoop) != 0) return;
  Deliver(byte);
}

void Uart16550::Deliver(uint8_t byte) {
  state_.line_idle = false;
  const size_t capacity = fifo_enabled() ? ByteFifo::kCapacity : 1;
  if (state_.rx.size() < capacity) {
    state_.rx.Push(byte);
    return;
  }
  state_.overrun = true;
  if (!fifo_enabled()) {
    // 16450 mode: the new character overwrites the unread one.
    state_.rx.Clear();
    state_.rx.Push(byte);
  }
  // FIFO mode: the character in the shift register is lost.
}

void Uart16550::LineIdle() {
  if (!state_.rx.empty()) state_.line_idle = true;
}

std::optional<uint8_t> Uart16550::TakeTx() {
  if (state_.tx.empty()) return std::nullopt;
  const uint8_t byte = state_.tx.Pop();
  if (state_.tx.empty()) TransmitterEmptied();
  return byte;
}

void Uart16550::TransmitterEmptied() { state_.thre_pending = true; }

}  // namespace umdev::vendor::serial
