// Malformed vfio-user input: every command's short, long and inconsistent
// forms get the errno the kernel or spec prescribes, or a clean disconnect,
// and the server keeps serving with no fd left behind.
#include <sys/eventfd.h>

#include <cstring>

#include "server_fixture.h"

namespace umdev::vfio_user::testing {
namespace {

std::vector<std::byte> Zeros(size_t n) { return std::vector<std::byte>(n); }

TEST_F(ServerTest, CommandsBeforeVersionAreEinval) {
  RawPeer peer = Connect();
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceGetInfo, Payload(DeviceInfoPayload{16}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Negotiate()), 0);
}

TEST_F(ServerTest, BadVersionsAreRefusedAndCanBeRetried) {
  RawPeer peer = Connect();
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kVersion, Zeros(2))), EINVAL);
  const char no_nul[] = {'{', '}'};
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kVersion,
                                       Payload(VersionPayload{0, 0}, no_nul))),
            EINVAL);
  const char not_json[] = "{nope";
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kVersion, Payload(VersionPayload{0, 0}, not_json))),
            EINVAL);
  const char empty[] = "{}";
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kVersion, Payload(VersionPayload{1, 0}, empty))),
            ENOTSUP);
  const char zero_xfer[] = R"({"capabilities":{"max_data_xfer_size":0}})";
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kVersion, Payload(VersionPayload{0, 0}, zero_xfer))),
            EINVAL);
  // A higher minor is answered with ours.
  Message reply = peer.Call(Command::kVersion, Payload(VersionPayload{0, 7}, empty));
  ASSERT_EQ(RawPeer::ErrorOf(reply), 0);
  EXPECT_EQ(LoadPayload<VersionPayload>(reply.payload)->minor, 0);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kVersion, Payload(VersionPayload{0, 0}, empty))),
            EINVAL);  // Only once.
}

TEST_F(ServerTest, ShortPayloadsAreEinvalForEveryCommand) {
  RawPeer peer = ConnectAndNegotiate();
  const std::pair<Command, size_t> cases[] = {
      {Command::kDmaMap, 31},          {Command::kDmaUnmap, 23},
      {Command::kDeviceGetInfo, 15},   {Command::kDeviceGetRegionInfo, 31},
      {Command::kDeviceGetRegionIoFds, 15}, {Command::kDeviceGetIrqInfo, 15},
      {Command::kDeviceSetIrqs, 19},   {Command::kRegionRead, 15},
      {Command::kRegionWrite, 15},     {Command::kRegionWriteMulti, 7},
      {Command::kDeviceFeature, 7},    {Command::kMigDataRead, 7},
      {Command::kMigDataWrite, 7},
  };
  for (const auto& [command, size] : cases) {
    EXPECT_NE(RawPeer::ErrorOf(peer.Call(command, Zeros(size))), 0) << CommandName(uint16_t(command));
    if (command != Command::kDeviceFeature && command != Command::kMigDataRead &&
        command != Command::kMigDataWrite) {
      EXPECT_EQ(RawPeer::ErrorOf(peer.Call(command, Zeros(size))), EINVAL)
          << CommandName(static_cast<uint16_t>(command));
    }
  }
}

TEST_F(ServerTest, ArgszUnderTheStructIsEinval) {
  RawPeer peer = ConnectAndNegotiate();
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceGetInfo, Payload(DeviceInfoPayload{15}))),
            EINVAL);
  vfio_region_info region{};
  region.argsz = 31;
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceGetRegionInfo, Payload(region))), EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceGetIrqInfo, Payload(vfio_irq_info{15}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs,
                                       Payload(IrqSetPayload{19, VFIO_IRQ_SET_DATA_NONE |
                                                                     VFIO_IRQ_SET_ACTION_TRIGGER}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaMap, Payload(DmaMapPayload{31, 1, 0, 0, 4096}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaUnmap, Payload(DmaUnmapPayload{23, 0, 0, 4096}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceGetRegionIoFds,
                                       Payload(RegionIoFdsPayload{15}))),
            EINVAL);
}

TEST_F(ServerTest, BadIndicesAreEinval) {
  RawPeer peer = ConnectAndNegotiate();
  vfio_region_info region{};
  region.argsz = 32;
  region.index = 9;
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceGetRegionInfo, Payload(region))), EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceGetIrqInfo, Payload(vfio_irq_info{16, 0, 5}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceGetRegionIoFds,
                                       Payload(RegionIoFdsPayload{16, 0, 99, 0}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceGetRegionIoFds,
                                       Payload(RegionIoFdsPayload{16, 1, 0, 0}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kRegionRead,
                                       Payload(RegionAccessPayload{0, 42, 4}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kRegionRead,
                                       Payload(RegionAccessPayload{254, VFIO_PCI_CONFIG_REGION_INDEX, 4}))),
            EINVAL);
}

TEST_F(ServerTest, RegionAccessSizeMismatchesAreRefused) {
  RawPeer peer = ConnectAndNegotiate();
  // Write whose count disagrees with its data.
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kRegionWrite,
                                       Payload(RegionAccessPayload{0, VFIO_PCI_CONFIG_REGION_INDEX, 4},
                                               uint16_t{1}))),
            EINVAL);
  // Read carrying data.
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kRegionRead,
                                       Payload(RegionAccessPayload{0, VFIO_PCI_CONFIG_REGION_INDEX, 4},
                                               uint32_t{1}))),
            EINVAL);
  // Over max_data_xfer_size (64 KiB here).
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kRegionRead,
                                       Payload(RegionAccessPayload{0, VFIO_PCI_CONFIG_REGION_INDEX,
                                                                   64 * 1024 + 1}))),
            E2BIG);
}

TEST_F(ServerTest, BadWriteMultiBatchesChangeNothing) {
  RawPeer peer = ConnectAndNegotiate();
  WriteMultiEntry good{0x30, VFIO_PCI_CONFIG_REGION_INDEX, 1, {0xaa}};
  WriteMultiEntry too_wide{0x31, VFIO_PCI_CONFIG_REGION_INDEX, 9, {}};
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kRegionWriteMulti, Payload(uint64_t{2}, good, too_wide))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kRegionWriteMulti, Payload(uint64_t{0}))), EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kRegionWriteMulti, Payload(uint64_t{201}))), EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kRegionWriteMulti, Payload(uint64_t{2}, good))),
            EINVAL);
  Message read = peer.Call(Command::kRegionRead,
                           Payload(RegionAccessPayload{0x30, VFIO_PCI_CONFIG_REGION_INDEX, 1}));
  EXPECT_EQ(read.payload.back(), std::byte{0});
}

TEST_F(ServerTest, DmaMapAndUnmapValidateFlagsAndFds) {
  RawPeer peer = ConnectAndNegotiate();
  UniqueFd a = GuestMemory(0x1000), b = GuestMemory(0x1000);
  const int two[] = {a.get(), b.get()};
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaMap, Payload(DmaMapPayload{32, 1, 0, 0, 0x1000}), two)),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaMap, Payload(DmaMapPayload{32, 0x10, 0, 0, 0x1000}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaMap, Payload(DmaMapPayload{32, 1, 0, 0x123, 0x1000}))),
            EINVAL);  // Unaligned.
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaUnmap,
                                       Payload(DmaUnmapPayload{24, VFIO_DMA_UNMAP_FLAG_ALL, 0, 0x1000}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaUnmap, Payload(DmaUnmapPayload{24, 1, 0, 0x1000}))),
            EINVAL);
}

TEST_F(ServerTest, SetIrqsDataMismatchesAreEinval) {
  RawPeer peer = ConnectAndNegotiate();
  UniqueFd e1(::eventfd(0, EFD_CLOEXEC)), e2(::eventfd(0, EFD_CLOEXEC));
  const int two[] = {e1.get(), e2.get()};
  const IrqSetPayload trigger{20, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                              VFIO_PCI_INTX_IRQ_INDEX, 0, 1};
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs, Payload(trigger), two)), EINVAL);
  const IrqSetPayload bools{20, VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER,
                            VFIO_PCI_INTX_IRQ_INDEX, 0, 1};
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs, Payload(bools))), EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs, Payload(bools, uint16_t{1}))), EINVAL);
  const IrqSetPayload none{20, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                           VFIO_PCI_INTX_IRQ_INDEX, 0, 1};
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs, Payload(none, uint8_t{1}))), EINVAL);
  const int one[] = {e1.get()};
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs, Payload(none), one)), EINVAL);
  // Out of the IRQ's range, and two data types at once.
  const IrqSetPayload past{20, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                           VFIO_PCI_INTX_IRQ_INDEX, 1, 1};
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs, Payload(past))), EINVAL);
  const IrqSetPayload both{20,
                           VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER,
                           VFIO_PCI_INTX_IRQ_INDEX, 0, 1};
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs, Payload(both, uint8_t{1}))), EINVAL);
}

TEST_F(ServerTest, FdsOnCommandsThatTakeNoneAreEinvalAndClosed) {
  RawPeer peer = ConnectAndNegotiate();
  const size_t before = OpenFdCount();
  {
    UniqueFd event(::eventfd(0, EFD_CLOEXEC));
    const int fds[] = {event.get()};
    EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceGetInfo, Payload(DeviceInfoPayload{16}), fds)),
              EINVAL);
  }
  EXPECT_EQ(OpenFdCount(), before);
}

TEST_F(ServerTest, MoreFdsThanMaxMsgFdsAreEinvalAndClosed) {
  RawPeer peer = ConnectAndNegotiate();
  const size_t before = OpenFdCount();
  {
    std::vector<UniqueFd> events;
    std::vector<int> fds;
    for (int i = 0; i < 6; ++i) {  // The server takes 4.
      events.emplace_back(::eventfd(0, EFD_CLOEXEC));
      fds.push_back(events.back().get());
    }
    const IrqSetPayload set{20, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                            VFIO_PCI_INTX_IRQ_INDEX, 0, 1};
    EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs, Payload(set), fds)), EINVAL);
  }
  EXPECT_EQ(OpenFdCount(), before);
}

TEST_F(ServerTest, UnknownAndReversedCommandsAreEinval) {
  RawPeer peer = ConnectAndNegotiate();
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(static_cast<Command>(99), Zeros(8))), EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(static_cast<Command>(14), Zeros(8))), EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaRead, Payload(DmaAccessPayload{0, 4}))), EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaWrite, Payload(DmaAccessPayload{0, 0}))), EINVAL);
}

TEST_F(ServerTest, MessageOfUnknownTypeIsEinval) {
  RawPeer peer = ConnectAndNegotiate();
  const uint16_t id = peer.Send(Command::kDeviceReset, {}, {}, 0x2);
  auto reply = peer.Receive();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->header.msg_id, id);
  EXPECT_EQ(RawPeer::ErrorOf(*reply), EINVAL);
}

TEST_F(ServerTest, OversizedMessageIsE2bigAndTheConnectionGoesOn) {
  RawPeer peer = ConnectAndNegotiate();
  std::vector<std::byte> big = Payload(RegionAccessPayload{0, VFIO_PCI_CONFIG_REGION_INDEX, 200000});
  big.resize(big.size() + 200000);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kRegionWrite, big)), E2BIG);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceReset, {})), 0);
}

TEST_F(ServerTest, UnexpectedReplyIsDroppedAndTheConnectionGoesOn) {
  RawPeer peer = ConnectAndNegotiate();
  peer.Send(Command::kDmaRead, Payload(DmaAccessPayload{0, 4}, uint32_t{0}), {}, kTypeReply);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceReset, {})), 0);
}

TEST_F(ServerTest, UnframeableHeaderDisconnectsAndTheNextClientIsServed) {
  {
    RawPeer peer = ConnectAndNegotiate();
    Header header{1, static_cast<uint16_t>(Command::kDeviceReset), 8, 0, 0};
    ASSERT_EQ(::send(peer.fd(), &header, sizeof(header), 0), static_cast<ssize_t>(sizeof(header)));
    EXPECT_TRUE(peer.ClosedByServer());
  }
  for (int i = 0; i < 500 && server_->IsConnected(uuid_); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  RawPeer next = ConnectAndNegotiate();
  EXPECT_EQ(RawPeer::ErrorOf(next.Call(Command::kDeviceReset, {})), 0);
}

TEST_F(ServerTest, ClientVanishingMidMessageLeavesNoFdsBehind) {
  const size_t before = OpenFdCount();
  {
    RawPeer peer = ConnectAndNegotiate();
    Header header{1, static_cast<uint16_t>(Command::kRegionWrite), 1000, 0, 0};
    ASSERT_EQ(::send(peer.fd(), &header, sizeof(header), 0), static_cast<ssize_t>(sizeof(header)));
  }
  for (int i = 0; i < 500 && server_->IsConnected(uuid_); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(server_->IsConnected(uuid_));
  EXPECT_EQ(OpenFdCount(), before);
}

}  // namespace
}  // namespace umdev::vfio_user::testing
