// mtty migration: every single arc of the v2 state machine, the stream codec,
// a round trip into a second instance with bytes in its FIFOs, and the
// resuming side's validation.
#include <array>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "mtty_test_util.h"
#include "umdev/vendor/serial/migration_stream.h"

namespace umdev::vendor::serial {
namespace {

using namespace testing;  // NOLINT: the test helpers.
using State = vfio_device_mig_state;

constexpr auto kError = VFIO_DEVICE_STATE_ERROR;
constexpr auto kStop = VFIO_DEVICE_STATE_STOP;
constexpr auto kRunning = VFIO_DEVICE_STATE_RUNNING;
constexpr auto kStopCopy = VFIO_DEVICE_STATE_STOP_COPY;
constexpr auto kResuming = VFIO_DEVICE_STATE_RESUMING;
constexpr auto kRunningP2p = VFIO_DEVICE_STATE_RUNNING_P2P;
constexpr auto kPreCopy = static_cast<State>(6);
constexpr auto kPreCopyP2p = static_cast<State>(7);

class MttyMigrationTest : public ::testing::Test {
 protected:
  std::unique_ptr<DeviceOps> Make(const std::string& type = "1") {
    auto ops = Probe(*parent_, type, dma_);
    EXPECT_TRUE(ops.has_value());
    return ops.has_value() ? std::move(*ops) : nullptr;
  }
  static void Walk(MigrationOps& mig, std::initializer_list<State> path) {
    for (State s : path) ASSERT_TRUE(mig.SetState(s)) << "to " << s;
  }
  static std::vector<std::byte> ReadAll(MigrationOps& mig) {
    std::vector<std::byte> out;
    std::array<std::byte, 7> chunk{};  // Odd-sized reads cross every field.
    for (;;) {
      auto n = mig.ReadData(chunk);
      EXPECT_TRUE(n.has_value());
      if (!n.has_value() || *n == 0) return out;
      out.insert(out.end(), chunk.begin(), chunk.begin() + static_cast<long>(*n));
    }
  }
  // A saved stream of a freshly made device of |type|.
  std::vector<std::byte> SaveFresh(const std::string& type) {
    auto ops = Make(type);
    MigrationOps& mig = *ops->migration();
    Walk(mig, {kRunningP2p, kStop, kStopCopy});
    return ReadAll(mig);
  }
  // Writes |stream| into a resuming device; returns the first error.
  static Result<void> Resume(MigrationOps& mig, std::span<const std::byte> stream) {
    UMDEV_TRY(mig.SetState(kRunningP2p));
    UMDEV_TRY(mig.SetState(kStop));
    UMDEV_TRY(mig.SetState(kResuming));
    UMDEV_ASSIGN_OR_RETURN(size_t n, mig.WriteData(stream));
    EXPECT_EQ(n, stream.size());
    return mig.SetState(kStop);
  }

  std::shared_ptr<MttyParent> parent_ = MttyParent::Create().value();
  NoDma dma_;
};

TEST_F(MttyMigrationTest, FlagsAndDataSize) {
  auto one = Make("1");
  auto two = Make("2");
  ASSERT_NE(one->migration(), nullptr);
  EXPECT_EQ(one->migration()->flags(),
            VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | (1u << 2));
  EXPECT_EQ(one->migration()->GetState(), kRunning);
  EXPECT_EQ(*one->migration()->GetDataSize(), 24u + 48u);
  EXPECT_EQ(*two->migration()->GetDataSize(), 24u + 2 * 48u);
}

// Every ordered pair of distinct states: exactly the kernel's single arcs
// succeed; any other leaves the state unchanged with EINVAL.
TEST_F(MttyMigrationTest, OnlySingleArcsAreAccepted) {
  const std::map<State, std::vector<State>> paths = {
      {kRunning, {}},
      {kRunningP2p, {kRunningP2p}},
      {kStop, {kRunningP2p, kStop}},
      {kStopCopy, {kRunningP2p, kStop, kStopCopy}},
      {kResuming, {kRunningP2p, kStop, kResuming}},
      {kPreCopy, {kPreCopy}},
      {kPreCopyP2p, {kPreCopy, kPreCopyP2p}},
  };
  const std::set<std::pair<State, State>> arcs = {
      {kRunning, kRunningP2p},   {kRunningP2p, kRunning},   {kRunningP2p, kStop},
      {kStop, kRunningP2p},      {kStop, kStopCopy},        {kStopCopy, kStop},
      {kStop, kResuming},        {kRunning, kPreCopy},      {kPreCopy, kRunning},
      {kPreCopy, kPreCopyP2p},   {kPreCopyP2p, kPreCopy},   {kRunningP2p, kPreCopyP2p},
      {kPreCopyP2p, kRunningP2p}, {kPreCopyP2p, kStopCopy},
  };
  const std::vector<State> all = {kError,    kStop,       kRunning, kStopCopy,
                                  kResuming, kRunningP2p, kPreCopy, kPreCopyP2p};
  for (const auto& [from, path] : paths) {
    for (State to : all) {
      // RESUMING -> STOP is an arc that loads the stream: see the tests below.
      if (to == from || (from == kResuming && to == kStop)) continue;
      SCOPED_TRACE(::testing::Message() << from << " -> " << to);
      auto ops = Make();
      MigrationOps& mig = *ops->migration();
      for (State s : path) ASSERT_TRUE(mig.SetState(s));
      const Result<void> result = mig.SetState(to);
      if (arcs.contains({from, to})) {
        EXPECT_TRUE(result.has_value());
        EXPECT_EQ(mig.GetState(), to);
      } else {
        EXPECT_EQ(Errno(result), EINVAL);
        EXPECT_EQ(mig.GetState(), from);
      }
    }
  }
}

TEST_F(MttyMigrationTest, FailedResumeGoesToErrorWhichOnlyResetLeaves) {
  auto ops = Make();
  MigrationOps& mig = *ops->migration();
  Walk(mig, {kRunningP2p, kStop, kResuming});
  EXPECT_EQ(Errno(mig.SetState(kStop)), EINVAL) << "no data was written";
  EXPECT_EQ(mig.GetState(), kError);
  for (State to : {kStop, kRunning, kRunningP2p, kResuming}) {
    EXPECT_EQ(Errno(mig.SetState(to)), EINVAL);
  }
  ASSERT_TRUE(ops->Reset());
  EXPECT_EQ(mig.GetState(), kRunning);
}

TEST_F(MttyMigrationTest, StreamsExistOnlyInTheirStates) {
  auto ops = Make();
  MigrationOps& mig = *ops->migration();
  std::array<std::byte, 8> buffer{};
  EXPECT_EQ(Errno(mig.ReadData(buffer)), EINVAL);
  EXPECT_EQ(Errno(mig.WriteData(buffer)), EINVAL);
  Walk(mig, {kRunningP2p, kStop, kStopCopy, kStop});
  EXPECT_EQ(Errno(mig.ReadData(buffer)), EINVAL) << "STOP_COPY -> STOP closed the stream";
}

TEST_F(MttyMigrationTest, CodecWritesExplicitLittleEndianFields) {
  PortSnapshot port;
  port.uart.ier = 0x05;
  port.uart.lcr = 0x03;
  port.uart.fcr = fcr::kEnable | 0x80;
  port.uart.divisor = 0x1234;
  port.uart.overrun = true;
  port.uart.rx.Push('h');
  port.uart.rx.Push('i');
  port.far_end = FarEndKind::kPty;
  const auto header = EncodeStreamHeader(1);
  ASSERT_EQ(header.size(), kStreamHeaderSize);
  EXPECT_EQ(header[0], std::byte{0x55});  // Magic, low byte first.
  EXPECT_EQ(header[8], std::byte{1});     // Version.
  EXPECT_EQ(header[12], std::byte{1});    // Ports.
  EXPECT_EQ(header[16], std::byte{48});   // Record size.
  const auto records = EncodePorts(std::span(&port, 1));
  ASSERT_EQ(records.size(), kStreamPortSize);
  EXPECT_EQ(records[0], std::byte{0x05});
  EXPECT_EQ(records[3], std::byte{0x81});
  EXPECT_EQ(records[7], std::byte{0x01});  // Status: overrun.
  EXPECT_EQ(records[8], std::byte{0x34});
  EXPECT_EQ(records[9], std::byte{0x12});
  EXPECT_EQ(records[10], std::byte{1});  // Far end: pty.
  EXPECT_EQ(records[11], std::byte{2});  // RX count.
  EXPECT_EQ(records[12], std::byte{'h'});
  EXPECT_EQ(records[13], std::byte{'i'});
}

TEST_F(MttyMigrationTest, RoundTripIntoSecondInstanceKeepsFifoBytes) {
  auto source = Make("2");
  for (unsigned bar = 0; bar < 2; ++bar) {
    WriteReg(*source, bar, reg::kIirFcr, fcr::kEnable | 0xc0);
    WriteReg(*source, bar, reg::kLcr, lcr::kDlab);
    WriteReg(*source, bar, reg::kRbrThr, static_cast<uint8_t>(0x0c + bar));
    WriteReg(*source, bar, reg::kLcr, 0x03);
    WriteReg(*source, bar, reg::kIer, ier::kRxData | ier::kLineStatus);
    WriteReg(*source, bar, reg::kMcr, mcr::kDtr | mcr::kOut2);
    WriteReg(*source, bar, reg::kScr, static_cast<uint8_t>(0xa0 + bar));
    for (int i = 0; i < 5 + static_cast<int>(bar); ++i) {
      WriteReg(*source, bar, reg::kRbrThr, static_cast<uint8_t>('0' + 10 * bar + i));
    }
  }
  MigrationOps& saving = *source->migration();
  Walk(saving, {kRunningP2p, kStop, kStopCopy});
  const std::vector<std::byte> stream = ReadAll(saving);
  EXPECT_EQ(stream.size(), *saving.GetDataSize());
  ASSERT_TRUE(saving.SetState(kStop));

  auto target = Make("2");
  MigrationOps& resuming = *target->migration();
  Walk(resuming, {kRunningP2p, kStop, kResuming});
  // In pieces, the header split across writes.
  ASSERT_EQ(resuming.WriteData(std::span(stream).first(10)), 10u);
  ASSERT_EQ(resuming.WriteData(std::span(stream).subspan(10, 30)), 30u);
  ASSERT_EQ(resuming.WriteData(std::span(stream).subspan(40)), stream.size() - 40);
  Walk(resuming, {kStop, kRunningP2p, kRunning});
  for (unsigned bar = 0; bar < 2; ++bar) {
    SCOPED_TRACE(bar);
    EXPECT_EQ(ReadReg(*target, bar, reg::kIer), ier::kRxData | ier::kLineStatus);
    EXPECT_EQ(ReadReg(*target, bar, reg::kIirFcr), iir::kFifoEnabled | iir::kRxTimeout);
    EXPECT_EQ(ReadReg(*target, bar, reg::kLcr), 0x03);
    EXPECT_EQ(ReadReg(*target, bar, reg::kMcr), mcr::kDtr | mcr::kOut2);
    EXPECT_EQ(ReadReg(*target, bar, reg::kScr), 0xa0 + bar);
    WriteReg(*target, bar, reg::kLcr, lcr::kDlab | 0x03);
    EXPECT_EQ(ReadReg(*target, bar, reg::kRbrThr), 0x0c + bar);
    WriteReg(*target, bar, reg::kLcr, 0x03);
    for (int i = 0; i < 5 + static_cast<int>(bar); ++i) {
      EXPECT_EQ(ReadReg(*target, bar, reg::kRbrThr), '0' + 10 * bar + i);
    }
    EXPECT_EQ(ReadReg(*target, bar, reg::kLsr) & lsr::kDataReady, 0);
  }
}

TEST_F(MttyMigrationTest, PreCopySendsTheHeaderFirst) {
  auto source = Make();
  WriteReg(*source, 0, reg::kScr, 0x42);
  MigrationOps& saving = *source->migration();
  ASSERT_TRUE(saving.SetState(kPreCopy));
  std::vector<std::byte> stream = ReadAll(saving);
  EXPECT_EQ(stream.size(), kStreamHeaderSize);
  Walk(saving, {kPreCopyP2p, kStopCopy});
  const std::vector<std::byte> rest = ReadAll(saving);
  stream.insert(stream.end(), rest.begin(), rest.end());
  EXPECT_EQ(stream.size(), StreamSize(1));
  auto target = Make();
  ASSERT_TRUE(Resume(*target->migration(), stream));
  EXPECT_EQ(ReadReg(*target, 0, reg::kScr), 0x42);
}

// The kernel sample's VFIO_MIG_GET_PRECOPY_INFO: what is left of the saving
// file, nothing dirty.
TEST_F(MttyMigrationTest, PrecopyInfoCountsWhatIsLeftToSend) {
  auto source = Make();
  MigrationOps* saving = source->migration();
  ASSERT_NE(saving, nullptr);
  const Result<PrecopyInfo> none = saving->GetPrecopyInfo();  // No saving stream yet.
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code, EINVAL);
  ASSERT_TRUE(saving->SetState(kPreCopy));
  const Result<PrecopyInfo> before = saving->GetPrecopyInfo();
  ASSERT_TRUE(before.has_value());
  EXPECT_EQ(before->initial_bytes, kStreamHeaderSize);
  EXPECT_EQ(before->dirty_bytes, 0u);
  std::vector<std::byte> some(10);
  ASSERT_EQ(saving->ReadData(some).value(), 10u);
  const Result<PrecopyInfo> after = saving->GetPrecopyInfo();
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->initial_bytes, kStreamHeaderSize - 10);
}

TEST_F(MttyMigrationTest, HeaderMismatchIsEfault) {
  const std::vector<std::byte> good = SaveFresh("1");
  const struct {
    const char* what;
    size_t offset;
  } cases[] = {{"magic", 0}, {"version", 8}, {"port count", 12}, {"record size", 16},
               {"flags", 20}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<std::byte> bad = good;
    bad[c.offset] ^= std::byte{0x01};
    auto target = Make();
    MigrationOps& mig = *target->migration();
    Walk(mig, {kRunningP2p, kStop, kResuming});
    EXPECT_EQ(Errno(mig.WriteData(bad)), EFAULT);
  }
  // A two-port stream into a one-port device.
  auto target = Make();
  MigrationOps& mig = *target->migration();
  Walk(mig, {kRunningP2p, kStop, kResuming});
  const std::vector<std::byte> two_ports = SaveFresh("2");
  EXPECT_EQ(Errno(mig.WriteData(std::span(two_ports).first(kStreamHeaderSize))), EFAULT);
}

TEST_F(MttyMigrationTest, DataBeyondTheStreamIsEnomem) {
  std::vector<std::byte> stream = SaveFresh("1");
  stream.push_back(std::byte{0});
  auto target = Make();
  MigrationOps& mig = *target->migration();
  Walk(mig, {kRunningP2p, kStop, kResuming});
  EXPECT_EQ(Errno(mig.WriteData(stream)), ENOMEM);
}

TEST_F(MttyMigrationTest, ShortOrOutOfRangeStreamIsEinvalAtLoad) {
  const std::vector<std::byte> good = SaveFresh("1");
  {
    auto target = Make();
    EXPECT_EQ(Errno(Resume(*target->migration(), std::span(good).first(good.size() - 1))), EINVAL);
  }
  const struct {
    const char* what;
    size_t offset;
    uint8_t value;
  } cases[] = {{"RX count above 1 with the FIFO off", 24 + 11, 2},
               {"reserved IER bits", 24 + 0, 0x10},
               {"reserved MCR bits", 24 + 2, 0x20},
               {"unknown status bits", 24 + 7, 0x80},
               {"unknown far-end kind", 24 + 10, 9},
               {"reserved trailing byte", 24 + 45, 1}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<std::byte> bad = good;
    bad[c.offset] = std::byte{c.value};
    auto target = Make();
    EXPECT_EQ(Errno(Resume(*target->migration(), bad)), EINVAL);
    EXPECT_EQ(target->migration()->GetState(), kError);
  }
}

TEST_F(MttyMigrationTest, FarEndKindMustMatch) {
  auto source = Make();
  ASSERT_TRUE(source->WriteAttribute("far_end", "pty"));
  MigrationOps& saving = *source->migration();
  Walk(saving, {kRunningP2p, kStop, kStopCopy});
  const std::vector<std::byte> stream = ReadAll(saving);
  auto loopback = Make();
  EXPECT_EQ(Errno(Resume(*loopback->migration(), stream)), EINVAL);
  auto pty = Make();
  ASSERT_TRUE(pty->WriteAttribute("far_end", "pty"));
  EXPECT_TRUE(Resume(*pty->migration(), stream));
}

TEST_F(MttyMigrationTest, CloseReturnsToRunningAndDropsStreams) {
  auto ops = Make();
  ASSERT_TRUE(ops->Open({}));
  MigrationOps& mig = *ops->migration();
  Walk(mig, {kRunningP2p, kStop, kStopCopy});
  ops->Close();
  EXPECT_EQ(mig.GetState(), kRunning);
  std::array<std::byte, 4> buffer{};
  EXPECT_EQ(Errno(mig.ReadData(buffer)), EINVAL);
}

}  // namespace
}  // namespace umdev::vendor::serial
