// Uart16550: every register, the FIFOs and their edges, interrupt priority
// and clearing, internal loopback, the divisor latch.
#include "umdev/vendor/serial/uart_16550.h"

#include <gtest/gtest.h>

namespace umdev::vendor::serial {
namespace {

uint8_t Iir(Uart16550& uart) { return uart.Read(reg::kIirFcr) & 0x0f; }

// A UART with the FIFO on at |trigger_bits| and the given interrupts enabled.
Uart16550 WithFifo(uint8_t trigger_bits, uint8_t ier_bits) {
  Uart16550 uart;
  uart.Write(reg::kIirFcr, fcr::kEnable | trigger_bits);
  uart.Write(reg::kIer, ier_bits);
  return uart;
}

void ReceiveN(Uart16550& uart, unsigned n, uint8_t first = 'a') {
  for (unsigned i = 0; i < n; ++i) uart.Receive(static_cast<uint8_t>(first + i));
}

TEST(Uart16550Test, PowerOnValues) {
  Uart16550 uart;
  EXPECT_EQ(uart.Peek(reg::kIer), 0);
  EXPECT_EQ(uart.Peek(reg::kIirFcr), iir::kNone);
  EXPECT_EQ(uart.Peek(reg::kLcr), 0);
  EXPECT_EQ(uart.Peek(reg::kMcr), 0);
  EXPECT_EQ(uart.Peek(reg::kLsr), lsr::kThre | lsr::kTemt);
  EXPECT_EQ(uart.Peek(reg::kMsr) & msr::kDeltas, 0);
  EXPECT_EQ(uart.Peek(reg::kScr), 0);
  EXPECT_EQ(uart.divisor(), 0);
  EXPECT_FALSE(uart.InterruptPending());
}

TEST(Uart16550Test, ScratchReadsBack) {
  Uart16550 uart;
  uart.Write(reg::kScr, 0xa5);
  EXPECT_EQ(uart.Read(reg::kScr), 0xa5);
  uart.Write(reg::kScr, 0x5a);
  EXPECT_EQ(uart.Read(reg::kScr), 0x5a);
}

TEST(Uart16550Test, IerKeepsOnlyLowNibble) {
  Uart16550 uart;
  uart.Write(reg::kIer, 0xff);
  EXPECT_EQ(uart.Read(reg::kIer), 0x0f);
}

TEST(Uart16550Test, LcrReadsBackAndDlabSelectsDivisor) {
  Uart16550 uart;
  uart.Write(reg::kIer, ier::kModem);
  uart.Write(reg::kLcr, lcr::kDlab | 0x03);
  EXPECT_EQ(uart.Read(reg::kLcr), lcr::kDlab | 0x03);
  uart.Write(reg::kRbrThr, 0x0c);  // DLL
  uart.Write(reg::kIer, 0x01);     // DLM
  EXPECT_EQ(uart.Read(reg::kRbrThr), 0x0c);
  EXPECT_EQ(uart.Read(reg::kIer), 0x01);
  EXPECT_EQ(uart.divisor(), 0x010c);
  EXPECT_EQ(uart.PendingTx(), 0u);  // DLL writes are not transmitted.
  uart.Write(reg::kLcr, 0x03);
  EXPECT_EQ(uart.Read(reg::kIer), ier::kModem);  // IER untouched by DLM writes.
  EXPECT_EQ(uart.divisor(), 0x010c);
}

TEST(Uart16550Test, McrKeepsFiveBits) {
  Uart16550 uart;
  uart.Write(reg::kMcr, 0xff);
  EXPECT_EQ(uart.Read(reg::kMcr), 0x1f);
}

TEST(Uart16550Test, LsrAndMsrWritesAreIgnored) {
  Uart16550 uart;
  uart.Write(reg::kLsr, 0xff);
  uart.Write(reg::kMsr, 0xff);
  EXPECT_EQ(uart.Read(reg::kLsr), lsr::kThre | lsr::kTemt);
  EXPECT_EQ(uart.Read(reg::kMsr), 0);
}

TEST(Uart16550Test, NonFifoModeHoldsOneByteAndOverwritesOnOverrun) {
  Uart16550 uart;
  EXPECT_EQ(uart.InputRoom(), 1u);
  uart.Receive('x');
  EXPECT_FALSE(uart.AcceptsInput());
  EXPECT_EQ(uart.Peek(reg::kLsr) & lsr::kDataReady, lsr::kDataReady);
  uart.Receive('y');  // 16450 overrun: the new byte replaces the old one.
  const uint8_t status = uart.Read(reg::kLsr);
  EXPECT_EQ(status & (lsr::kOverrun | lsr::kDataReady), lsr::kOverrun | lsr::kDataReady);
  EXPECT_EQ(uart.Read(reg::kLsr) & lsr::kOverrun, 0) << "LSR read clears OE";
  EXPECT_EQ(uart.Read(reg::kRbrThr), 'y');
  EXPECT_EQ(uart.Read(reg::kLsr) & lsr::kDataReady, 0);
}

TEST(Uart16550Test, FifoKeepsOrderAndOverrunDropsTheNewByte) {
  Uart16550 uart = WithFifo(0, 0);
  ReceiveN(uart, 16);
  EXPECT_EQ(uart.InputRoom(), 0u);
  EXPECT_EQ(uart.Peek(reg::kLsr) & lsr::kOverrun, 0);
  uart.Receive('!');
  EXPECT_EQ(uart.Read(reg::kLsr) & lsr::kOverrun, lsr::kOverrun);
  for (unsigned i = 0; i < 16; ++i) EXPECT_EQ(uart.Read(reg::kRbrThr), 'a' + i);
  EXPECT_EQ(uart.Read(reg::kLsr) & lsr::kDataReady, 0);
}

TEST(Uart16550Test, IirReportsFifoBitsOnlyWithFifoEnabled) {
  Uart16550 uart;
  EXPECT_EQ(uart.Read(reg::kIirFcr), iir::kNone);
  uart.Write(reg::kIirFcr, fcr::kEnable);
  EXPECT_EQ(uart.Read(reg::kIirFcr), iir::kFifoEnabled | iir::kNone);
  uart.Write(reg::kIirFcr, 0);
  EXPECT_EQ(uart.Read(reg::kIirFcr), iir::kNone);
}

TEST(Uart16550Test, TriggerLevels) {
  const struct {
    uint8_t bits;
    unsigned level;
  } cases[] = {{0x00, 1}, {0x40, 4}, {0x80, 8}, {0xc0, 14}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.level);
    Uart16550 uart = WithFifo(c.bits, ier::kRxData);
    EXPECT_EQ(uart.trigger_level(), c.level);
    ReceiveN(uart, c.level - 1);
    EXPECT_EQ(Iir(uart), iir::kNone) << "below the trigger, line busy";
    uart.Receive('z');
    EXPECT_EQ(Iir(uart), iir::kRxData);
    uart.Read(reg::kRbrThr);  // Back below the trigger: RDA clears.
    if (c.level > 1) {
      EXPECT_EQ(Iir(uart), iir::kNone);
    }
  }
}

TEST(Uart16550Test, TimeoutWhenIdleBelowTrigger) {
  Uart16550 uart = WithFifo(0xc0, ier::kRxData);
  ReceiveN(uart, 3);
  EXPECT_EQ(Iir(uart), iir::kNone);
  uart.LineIdle();
  EXPECT_EQ(Iir(uart), iir::kRxTimeout);
  uart.Receive('d');  // New input restarts the timer.
  EXPECT_EQ(Iir(uart), iir::kNone);
  uart.LineIdle();
  for (int i = 0; i < 4; ++i) uart.Read(reg::kRbrThr);
  EXPECT_EQ(Iir(uart), iir::kNone) << "an empty FIFO has no timeout";
}

TEST(Uart16550Test, FcrClearsFifosAndProgramsOnlyWithEnable) {
  Uart16550 uart = WithFifo(0x80, 0);
  ReceiveN(uart, 5);
  uart.Write(reg::kIirFcr, fcr::kEnable | fcr::kClearRx | 0x80);
  EXPECT_EQ(uart.Peek(reg::kLsr) & lsr::kDataReady, 0);
  EXPECT_EQ(uart.trigger_level(), 8u);
  uart.Write(reg::kRbrThr, 'q');
  EXPECT_EQ(uart.PendingTx(), 1u);
  uart.Write(reg::kIirFcr, fcr::kEnable | fcr::kClearTx | 0x80);
  EXPECT_EQ(uart.PendingTx(), 0u);
  EXPECT_NE(uart.Peek(reg::kLsr) & lsr::kThre, 0);
  ReceiveN(uart, 2);
  uart.Write(reg::kIirFcr, 0xc0);  // FCR0 clear: FIFO off, trigger not programmed.
  EXPECT_FALSE(uart.fifo_enabled());
  EXPECT_EQ(uart.Peek(reg::kLsr) & lsr::kDataReady, 0) << "toggling FCR0 clears the FIFOs";
  uart.Write(reg::kIirFcr, fcr::kEnable);
  EXPECT_EQ(uart.trigger_level(), 1u);
}

TEST(Uart16550Test, TransmitFifoHoldsSixteenAndDropsMore) {
  Uart16550 uart = WithFifo(0, 0);
  for (int i = 0; i < 17; ++i) uart.Write(reg::kRbrThr, static_cast<uint8_t>('A' + i));
  EXPECT_EQ(uart.PendingTx(), 16u);
  EXPECT_EQ(uart.Peek(reg::kLsr) & (lsr::kThre | lsr::kTemt), 0);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(uart.TakeTx(), 'A' + i);
  EXPECT_FALSE(uart.TakeTx().has_value());
  EXPECT_EQ(uart.Peek(reg::kLsr) & (lsr::kThre | lsr::kTemt), lsr::kThre | lsr::kTemt);
}

TEST(Uart16550Test, NonFifoTransmitHoldsOneByte) {
  Uart16550 uart;
  uart.Write(reg::kRbrThr, '1');
  uart.Write(reg::kRbrThr, '2');
  EXPECT_EQ(uart.PendingTx(), 1u);
  EXPECT_EQ(uart.TakeTx(), '1');
}

TEST(Uart16550Test, ThreInterruptClearedByIirReadOrThrWrite) {
  Uart16550 uart;
  uart.Write(reg::kIer, ier::kThre);  // Enabling ETBEI with THR empty raises it.
  EXPECT_TRUE(uart.InterruptPending());
  EXPECT_EQ(Iir(uart), iir::kThre);
  EXPECT_FALSE(uart.InterruptPending()) << "reading IIR cleared THRE";
  uart.Write(reg::kIer, 0);
  uart.Write(reg::kIer, ier::kThre);
  EXPECT_TRUE(uart.InterruptPending());
  uart.Write(reg::kRbrThr, 'x');
  EXPECT_FALSE(uart.InterruptPending()) << "writing THR cleared THRE";
  EXPECT_EQ(uart.TakeTx(), 'x');
  EXPECT_EQ(Iir(uart), iir::kThre) << "the transmitter emptied";
}

TEST(Uart16550Test, LineStatusInterruptClearedByLsrRead) {
  Uart16550 uart = WithFifo(0, ier::kLineStatus);
  ReceiveN(uart, 17);
  EXPECT_EQ(Iir(uart), iir::kLineStatus);
  uart.Read(reg::kLsr);
  EXPECT_EQ(Iir(uart), iir::kNone);
}

TEST(Uart16550Test, ModemStatusDeltasAndClearing) {
  Uart16550 uart;
  uart.Write(reg::kIer, ier::kModem);
  uart.SetModemInputs(msr::kCts | msr::kDsr | msr::kRi | msr::kDcd);
  EXPECT_EQ(Iir(uart), iir::kModem);
  EXPECT_EQ(uart.Read(reg::kMsr), msr::kCts | msr::kDsr | msr::kRi | msr::kDcd | msr::kDeltaCts |
                                      msr::kDeltaDsr | msr::kDeltaDcd)
      << "RI rising is no TERI";
  EXPECT_EQ(Iir(uart), iir::kNone) << "reading MSR cleared the deltas";
  uart.SetModemInputs(msr::kCts | msr::kDsr | msr::kDcd);
  EXPECT_EQ(uart.Read(reg::kMsr), msr::kCts | msr::kDsr | msr::kDcd | msr::kTrailingRi);
  EXPECT_EQ(uart.Read(reg::kMsr), msr::kCts | msr::kDsr | msr::kDcd);
}

TEST(Uart16550Test, InterruptPriorityOrder) {
  Uart16550 uart = WithFifo(0, ier::kRxData | ier::kThre | ier::kLineStatus | ier::kModem);
  uart.SetModemInputs(msr::kCts);
  ReceiveN(uart, 17);  // Data at trigger, plus an overrun.
  EXPECT_EQ(Iir(uart), iir::kLineStatus);
  uart.Read(reg::kLsr);
  EXPECT_EQ(Iir(uart), iir::kRxData);
  for (int i = 0; i < 16; ++i) uart.Read(reg::kRbrThr);
  EXPECT_EQ(Iir(uart), iir::kThre);  // This read also clears it.
  EXPECT_EQ(Iir(uart), iir::kModem);
  uart.Read(reg::kMsr);
  EXPECT_EQ(Iir(uart), iir::kNone);
}

TEST(Uart16550Test, DisabledSourcesDoNotInterrupt) {
  Uart16550 uart = WithFifo(0, 0);
  uart.SetModemInputs(msr::kDcd);
  ReceiveN(uart, 17);
  EXPECT_FALSE(uart.InterruptPending());
  EXPECT_EQ(uart.Peek(reg::kIirFcr), iir::kFifoEnabled | iir::kNone);
}

TEST(Uart16550Test, InternalLoopbackMapsOutputsToModemInputs) {
  Uart16550 uart;
  uart.SetModemInputs(msr::kCts | msr::kDsr | msr::kDcd);
  uart.Read(reg::kMsr);
  uart.Write(reg::kMcr, mcr::kLoop);
  EXPECT_EQ(uart.Read(reg::kMsr) & msr::kInputs, 0) << "far-end lines are disconnected";
  EXPECT_EQ(uart.ModemOutputs(), 0);
  const struct {
    uint8_t out;
    uint8_t in;
  } map[] = {{mcr::kRts, msr::kCts}, {mcr::kDtr, msr::kDsr}, {mcr::kOut1, msr::kRi},
             {mcr::kOut2, msr::kDcd}};
  for (const auto& m : map) {
    uart.Write(reg::kMcr, mcr::kLoop | m.out);
    EXPECT_EQ(uart.Read(reg::kMsr) & msr::kInputs, m.in);
  }
  // Linux's autoconfig probe: MCR = LOOP|OUT2|RTS (0x1a) must read MSR 0x90.
  uart.Write(reg::kMcr, 0x1a);
  EXPECT_EQ(uart.Read(reg::kMsr) & msr::kInputs, 0x90);
}

TEST(Uart16550Test, InternalLoopbackReturnsTransmittedBytes) {
  Uart16550 uart = WithFifo(0, ier::kRxData);
  uart.Write(reg::kMcr, mcr::kLoop);
  EXPECT_FALSE(uart.AcceptsInput()) << "the line is disconnected in loopback";
  uart.Receive('!');  // Ignored.
  uart.Write(reg::kRbrThr, 'L');
  EXPECT_EQ(uart.PendingTx(), 0u) << "nothing reaches the far end";
  EXPECT_EQ(Iir(uart), iir::kRxData);
  EXPECT_EQ(uart.Read(reg::kRbrThr), 'L');
  EXPECT_EQ(uart.Read(reg::kLsr) & lsr::kDataReady, 0);
}

TEST(Uart16550Test, ResetRestoresPowerOnButKeepsModemInputs) {
  Uart16550 uart = WithFifo(0xc0, 0x0f);
  uart.Write(reg::kLcr, lcr::kDlab);
  uart.Write(reg::kRbrThr, 0x30);
  uart.Write(reg::kLcr, 0x03);
  uart.Write(reg::kMcr, 0x0b);
  uart.Write(reg::kScr, 0x77);
  uart.Write(reg::kRbrThr, 't');
  uart.SetModemInputs(msr::kDsr);
  ReceiveN(uart, 17);
  uart.Reset();
  EXPECT_EQ(uart.Peek(reg::kIer), 0);
  EXPECT_EQ(uart.Peek(reg::kIirFcr), iir::kNone);
  EXPECT_EQ(uart.Peek(reg::kLcr), 0);
  EXPECT_EQ(uart.Peek(reg::kMcr), 0);
  EXPECT_EQ(uart.Peek(reg::kLsr), lsr::kThre | lsr::kTemt);
  EXPECT_EQ(uart.Peek(reg::kMsr), msr::kDsr);
  EXPECT_EQ(uart.Peek(reg::kScr), 0);
  EXPECT_EQ(uart.divisor(), 0);
  EXPECT_EQ(uart.PendingTx(), 0u);
}

TEST(Uart16550Test, RestoreRoundTripsState) {
  Uart16550 uart = WithFifo(0x40, ier::kRxData);
  ReceiveN(uart, 3);
  uart.Write(reg::kRbrThr, 'T');
  Uart16550 copy;
  copy.Restore(uart.state());
  EXPECT_EQ(copy.trigger_level(), 4u);
  EXPECT_EQ(copy.PendingTx(), 1u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(copy.Read(reg::kRbrThr), 'a' + i);
}

}  // namespace
}  // namespace umdev::vendor::serial
