// The vfio-user server: sockets, negotiation, the device commands, DMA and
// disconnect, against the type1 backend and a test device.
#include <sys/stat.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <cstring>
#include <thread>

#include "fakes/pci_test_device.h"
#include "server_fixture.h"

namespace umdev::vfio_user::testing {
namespace {

std::string CapsJson(const Message& reply) {
  const auto text = std::span(reply.payload).subspan(sizeof(VersionPayload));
  return std::string(reinterpret_cast<const char*>(text.data()), text.size());
}

TEST_F(ServerTest, SocketIsCreatedWithTheInstanceMode0600AndRemovedWithIt) {
  const std::string path = server_->SocketPath(uuid_);
  EXPECT_EQ(path, (dir_ / "vfio-user" / (uuid_.ToString() + ".sock")).string());
  struct stat st{};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_TRUE(registry_->RemoveMdev(uuid_));
  EXPECT_NE(::stat(path.c_str(), &st), 0);
}

TEST_F(ServerTest, InstancesThatExistedBeforeStartGetSockets) {
  server_->Stop();
  ServerOptions options;
  options.socket_dir = (dir_ / "again").string();
  Server second(*registry_, options);
  ASSERT_TRUE(second.Start());
  EXPECT_TRUE(std::filesystem::exists(second.SocketPath(uuid_)));
  second.Stop();
  EXPECT_FALSE(std::filesystem::exists(second.SocketPath(uuid_)));
}

TEST_F(ServerTest, VersionReplyOffersOurCapabilitiesNulTerminated) {
  RawPeer peer = Connect();
  Message reply = peer.Negotiate();
  ASSERT_EQ(RawPeer::ErrorOf(reply), 0);
  auto version = LoadPayload<VersionPayload>(reply.payload);
  ASSERT_TRUE(version.has_value());
  EXPECT_EQ(version->major, 0);
  EXPECT_EQ(version->minor, 0);
  ASSERT_FALSE(reply.payload.empty());
  EXPECT_EQ(reply.payload.back(), std::byte{0});
  auto caps = ParseCapabilities(std::span(reply.payload).subspan(sizeof(VersionPayload)));
  ASSERT_TRUE(caps.has_value()) << CapsJson(reply);
  EXPECT_EQ(caps->max_msg_fds, 4u);
  EXPECT_EQ(caps->max_data_xfer_size, 64u * 1024);
  EXPECT_EQ(caps->pgsizes, 4096u);
  EXPECT_LE(caps->max_dma_maps, 65535u);
  EXPECT_TRUE(caps->write_multiple);
}

TEST_F(ServerTest, VersionLowersMaxDmaMapsToTheClientsOffer) {
  RawPeer peer = Connect();
  Message reply = peer.Negotiate(R"({"capabilities":{"max_dma_maps":10}})");
  auto caps = ParseCapabilities(std::span(reply.payload).subspan(sizeof(VersionPayload)));
  ASSERT_TRUE(caps.has_value());
  EXPECT_EQ(caps->max_dma_maps, 10u);
}

TEST_F(ServerTest, GetInfoReportsThePciDevice) {
  RawPeer peer = ConnectAndNegotiate();
  Message reply = peer.Call(Command::kDeviceGetInfo, Payload(DeviceInfoPayload{16, 0, 0, 0}));
  auto info = LoadPayload<DeviceInfoPayload>(reply.payload);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->argsz, 16u);
  EXPECT_TRUE(info->flags & VFIO_DEVICE_FLAGS_PCI);
  EXPECT_EQ(info->num_regions, VFIO_PCI_NUM_REGIONS);
  EXPECT_EQ(info->num_irqs, VFIO_PCI_NUM_IRQS);
}

TEST_F(ServerTest, RegionInfoDescribesTheConfigRegion) {
  RawPeer peer = ConnectAndNegotiate();
  vfio_region_info query{};
  query.argsz = sizeof(query);
  query.index = VFIO_PCI_CONFIG_REGION_INDEX;
  Message reply = peer.Call(Command::kDeviceGetRegionInfo, Payload(query));
  ASSERT_EQ(RawPeer::ErrorOf(reply), 0);
  auto info = LoadPayload<vfio_region_info>(reply.payload);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->index, VFIO_PCI_CONFIG_REGION_INDEX);
  EXPECT_EQ(info->size, 256u);
  EXPECT_EQ(info->flags, VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE);
  EXPECT_TRUE(reply.fds.empty());
}

// A region with capabilities names where the chain starts even in the short
// reply: QEMU checks cap_offset before it asks again, and fails the device
// (EINVAL) on a 0. The fd comes with the complete answer.
TEST_F(ServerTest, ShortRegionInfoOfASparseMmapBarStillNamesTheCapabilityOffset) {
  ASSERT_TRUE(registry_->RegisterParent(std::make_shared<umdev::testing::PciTestParentDriver>(
      umdev::testing::PciTestParentDriver::Options{.parent_name = "pci0"})));
  const Uuid uuid = Uuid::Generate();
  ASSERT_TRUE(registry_->CreateMdev("pci0", "test_pci-mmap", uuid));
  auto peer = RawPeer::Connect(server_->SocketPath(uuid));
  ASSERT_TRUE(peer.has_value()) << peer.error().Describe();
  ASSERT_EQ(RawPeer::ErrorOf(peer->Negotiate()), 0);
  vfio_region_info query{};
  query.argsz = sizeof(query);
  query.index = VFIO_PCI_BAR3_REGION_INDEX;
  Message short_reply = peer->Call(Command::kDeviceGetRegionInfo, Payload(query));
  ASSERT_EQ(RawPeer::ErrorOf(short_reply), 0);
  ASSERT_EQ(short_reply.payload.size(), sizeof(vfio_region_info));
  auto head = LoadPayload<vfio_region_info>(short_reply.payload);
  ASSERT_TRUE(head.has_value());
  EXPECT_NE(head->flags & VFIO_REGION_INFO_FLAG_CAPS, 0u);
  EXPECT_NE(head->flags & VFIO_REGION_INFO_FLAG_MMAP, 0u);
  EXPECT_GT(head->argsz, sizeof(vfio_region_info));
  EXPECT_EQ(head->cap_offset, sizeof(vfio_region_info));
  EXPECT_TRUE(short_reply.fds.empty());

  query.argsz = head->argsz;
  Message full = peer->Call(Command::kDeviceGetRegionInfo, Payload(query));
  ASSERT_EQ(RawPeer::ErrorOf(full), 0);
  ASSERT_EQ(full.payload.size(), head->argsz);
  ASSERT_EQ(full.fds.size(), 1u);
  vfio_region_info_cap_sparse_mmap sparse{};
  std::memcpy(&sparse, full.payload.data() + sizeof(vfio_region_info), sizeof(sparse));
  EXPECT_EQ(sparse.header.id, VFIO_REGION_INFO_CAP_SPARSE_MMAP);
  EXPECT_EQ(sparse.nr_areas, 1u);
}

TEST_F(ServerTest, IrqInfoReportsIntx) {
  RawPeer peer = ConnectAndNegotiate();
  Message reply = peer.Call(Command::kDeviceGetIrqInfo,
                            Payload(vfio_irq_info{16, 0, VFIO_PCI_INTX_IRQ_INDEX, 0}));
  auto info = LoadPayload<vfio_irq_info>(reply.payload);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->count, 1u);
  EXPECT_EQ(info->flags,
            VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED);
}

TEST_F(ServerTest, RegionIoFdsOffersNone) {
  RawPeer peer = ConnectAndNegotiate();
  Message reply = peer.Call(Command::kDeviceGetRegionIoFds,
                            Payload(RegionIoFdsPayload{16, 0, 0, 0}));
  ASSERT_EQ(RawPeer::ErrorOf(reply), 0);
  auto io = LoadPayload<RegionIoFdsPayload>(reply.payload);
  ASSERT_TRUE(io.has_value());
  EXPECT_EQ(io->count, 0u);
  EXPECT_TRUE(reply.fds.empty());
}

TEST_F(ServerTest, RegionWriteThenReadRoundTrips) {
  RawPeer peer = ConnectAndNegotiate();
  const uint32_t value = 0xdeadbeef;
  Message wrote = peer.Call(Command::kRegionWrite,
                            Payload(RegionAccessPayload{0x40, VFIO_PCI_CONFIG_REGION_INDEX, 4}, value));
  ASSERT_EQ(RawPeer::ErrorOf(wrote), 0);
  auto echo = LoadPayload<RegionAccessPayload>(wrote.payload);
  ASSERT_TRUE(echo.has_value());
  EXPECT_EQ(wrote.payload.size(), sizeof(RegionAccessPayload));
  EXPECT_EQ(echo->count, 4u);
  Message read = peer.Call(Command::kRegionRead,
                           Payload(RegionAccessPayload{0x40, VFIO_PCI_CONFIG_REGION_INDEX, 4}));
  ASSERT_EQ(read.payload.size(), sizeof(RegionAccessPayload) + 4);
  EXPECT_EQ(*LoadPayload<uint32_t>(read.payload, sizeof(RegionAccessPayload)), value);
}

TEST_F(ServerTest, PostedWriteGetsNoReplyAndIsDoneBeforeTheNextCommand) {
  RawPeer peer = ConnectAndNegotiate();
  const uint8_t value = 0x77;
  peer.Send(Command::kRegionWrite,
            Payload(RegionAccessPayload{0x10, VFIO_PCI_CONFIG_REGION_INDEX, 1}, value), {},
            kTypeCommand | kFlagNoReply);
  Message read = peer.Call(Command::kRegionRead,
                           Payload(RegionAccessPayload{0x10, VFIO_PCI_CONFIG_REGION_INDEX, 1}));
  ASSERT_EQ(read.payload.size(), sizeof(RegionAccessPayload) + 1);
  EXPECT_EQ(read.payload.back(), std::byte{0x77});
}

TEST_F(ServerTest, WriteMultiAppliesEveryWriteInOrder) {
  RawPeer peer = ConnectAndNegotiate();
  WriteMultiEntry first{0x20, VFIO_PCI_CONFIG_REGION_INDEX, 4, {1, 2, 3, 4}};
  WriteMultiEntry second{0x22, VFIO_PCI_CONFIG_REGION_INDEX, 1, {9}};
  Message reply = peer.Call(Command::kRegionWriteMulti, Payload(uint64_t{2}, first, second));
  ASSERT_EQ(RawPeer::ErrorOf(reply), 0);
  EXPECT_EQ(*LoadPayload<uint64_t>(reply.payload), 2u);
  Message read = peer.Call(Command::kRegionRead,
                           Payload(RegionAccessPayload{0x20, VFIO_PCI_CONFIG_REGION_INDEX, 4}));
  EXPECT_EQ(*LoadPayload<uint32_t>(read.payload, 16), 0x04090201u);
}

TEST_F(ServerTest, ResetReachesTheDevice) {
  RawPeer peer = ConnectAndNegotiate();
  const int before = parent_->counters()->resets;
  Message reply = peer.Call(Command::kDeviceReset, {});
  EXPECT_EQ(RawPeer::ErrorOf(reply), 0);
  EXPECT_TRUE(reply.payload.empty());
  EXPECT_EQ(parent_->counters()->resets, before + 1);
}

TEST_F(ServerTest, SetIrqsAcceptsEventfdsBoolsAndDeassign) {
  RawPeer peer = ConnectAndNegotiate();
  UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  const int fds[] = {event.get()};
  const IrqSetPayload trigger{20, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                              VFIO_PCI_INTX_IRQ_INDEX, 0, 1};
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs, Payload(trigger), fds)), 0);
  // No fds with DATA_EVENTFD: de-assign (QEMU's runs of fd -1).
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs, Payload(trigger))), 0);
  const IrqSetPayload unmask{21, VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_UNMASK,
                             VFIO_PCI_INTX_IRQ_INDEX, 0, 1};
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs, Payload(unmask, uint8_t{1}))), 0);
  const IrqSetPayload disable{20, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                              VFIO_PCI_INTX_IRQ_INDEX, 0, 0};
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDeviceSetIrqs, Payload(disable))), 0);
}

TEST_F(ServerTest, DmaMapWithFdIsReadableByTheDevice) {
  RawPeer peer = ConnectAndNegotiate();
  UniqueFd memory = GuestMemory(0x4000);
  ASSERT_EQ(::pwrite(memory.get(), "hello", 5, 0x1000 + 0x10), 5);
  const int fds[] = {memory.get()};
  Message mapped = peer.Call(Command::kDmaMap,
                             Payload(DmaMapPayload{32, kProtRead | kProtWrite, 0x1000, 0x100000, 0x2000}),
                             fds);
  ASSERT_EQ(RawPeer::ErrorOf(mapped), 0);
  char got[5] = {};
  auto read = device()->dma().DmaRead(0x100010, std::as_writable_bytes(std::span(got)));
  ASSERT_TRUE(read.has_value()) << read.error().Describe();
  EXPECT_EQ(std::string(got, 5), "hello");
  // Overlap: EEXIST.
  Message again = peer.Call(Command::kDmaMap,
                            Payload(DmaMapPayload{32, kProtRead, 0, 0x101000, 0x1000}), fds);
  EXPECT_EQ(RawPeer::ErrorOf(again), EEXIST);
}

TEST_F(ServerTest, DmaUnmapEchoesTheEntryAndUnmaps) {
  RawPeer peer = ConnectAndNegotiate();
  UniqueFd memory = GuestMemory(0x2000);
  const int fds[] = {memory.get()};
  ASSERT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaMap,
                                       Payload(DmaMapPayload{32, kProtRead, 0, 0x200000, 0x2000}),
                                       fds)),
            0);
  Message reply = peer.Call(Command::kDmaUnmap, Payload(DmaUnmapPayload{24, 0, 0x200000, 0x2000}));
  ASSERT_EQ(RawPeer::ErrorOf(reply), 0);
  auto echo = LoadPayload<DmaUnmapPayload>(reply.payload);
  ASSERT_TRUE(echo.has_value());
  EXPECT_EQ(reply.payload.size(), 24u);
  EXPECT_EQ(echo->address, 0x200000u);
  EXPECT_EQ(echo->size, 0x2000u);
  std::byte out[4];
  auto read = device()->dma().DmaRead(0x200000, out);
  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(read.error().code, EFAULT);
}

TEST_F(ServerTest, UnmapAllDropsEveryMapping) {
  RawPeer peer = ConnectAndNegotiate();
  UniqueFd memory = GuestMemory(0x2000);
  const int fds[] = {memory.get()};
  for (uint64_t iova : {0x0ull, 0x10000ull}) {
    ASSERT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaMap,
                                         Payload(DmaMapPayload{32, kProtRead, 0, iova, 0x1000}), fds)),
              0);
  }
  Message reply = peer.Call(Command::kDmaUnmap,
                            Payload(DmaUnmapPayload{24, VFIO_DMA_UNMAP_FLAG_ALL, 0, 0}));
  ASSERT_EQ(RawPeer::ErrorOf(reply), 0);
  std::byte out[4];
  EXPECT_FALSE(device()->dma().DmaRead(0x10000, out).has_value());
}

// The client's side of message DMA: answers one DMA_READ or DMA_WRITE from |memory|.
void AnswerDma(RawPeer& peer, std::vector<std::byte>& memory, uint64_t base, int error = 0) {
  auto request = peer.Receive();
  ASSERT_TRUE(request.has_value()) << request.error().Describe();
  auto access = LoadPayload<DmaAccessPayload>(request->payload);
  ASSERT_TRUE(access.has_value());
  Header header = request->header;
  header.flags = kTypeReply;
  if (error != 0) {
    header.flags |= kFlagError;
    header.error_no = static_cast<uint32_t>(error);
    ASSERT_TRUE(SendMessage(peer.fd(), header, {}));
    return;
  }
  std::vector<std::byte> reply = Payload(*access);
  const size_t at = access->address - base;
  if (request->header.command == static_cast<uint16_t>(Command::kDmaRead)) {
    EXPECT_EQ(request->payload.size(), sizeof(DmaAccessPayload));
    AppendBytes(reply, std::span(memory).subspan(at, access->count));
  } else {
    ASSERT_EQ(request->header.command, static_cast<uint16_t>(Command::kDmaWrite));
    ASSERT_EQ(request->payload.size(), sizeof(DmaAccessPayload) + access->count);
    std::copy(request->payload.begin() + sizeof(DmaAccessPayload), request->payload.end(),
              memory.begin() + static_cast<ptrdiff_t>(at));
  }
  ASSERT_TRUE(SendMessage(peer.fd(), header, reply));
}

TEST_F(ServerTest, FdlessMappingIsReachedThroughDmaMessages) {
  RawPeer peer = ConnectAndNegotiate();
  ASSERT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaMap,
                                       Payload(DmaMapPayload{32, kProtRead | kProtWrite, 0,
                                                             0x300000, 0x1000}))),
            0);
  std::vector<std::byte> guest(0x1000);
  const char text[] = "from the device";
  Result<void> wrote;
  std::thread device_thread([&] {
    wrote = device()->dma().DmaWrite(0x300100, std::as_bytes(std::span(text)));
  });
  AnswerDma(peer, guest, 0x300000);
  device_thread.join();
  ASSERT_TRUE(wrote.has_value()) << wrote.error().Describe();
  EXPECT_EQ(std::memcmp(guest.data() + 0x100, text, sizeof(text)), 0);

  char back[sizeof(text)] = {};
  Result<void> read;
  std::thread reader([&] {
    read = device()->dma().DmaRead(0x300100, std::as_writable_bytes(std::span(back)));
  });
  AnswerDma(peer, guest, 0x300000);
  reader.join();
  ASSERT_TRUE(read.has_value()) << read.error().Describe();
  EXPECT_STREQ(back, text);
}

TEST_F(ServerTest, MessageDmaLargerThanTheClientsLimitIsSplit) {
  RawPeer peer = Connect();
  ASSERT_EQ(RawPeer::ErrorOf(peer.Negotiate(R"({"capabilities":{"max_data_xfer_size":4096}})")), 0);
  ASSERT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaMap,
                                       Payload(DmaMapPayload{32, kProtRead | kProtWrite, 0, 0,
                                                             0x4000}))),
            0);
  std::vector<std::byte> guest(0x4000);
  std::vector<std::byte> data(10000, std::byte{0x42});
  Result<void> wrote;
  std::thread device_thread([&] { wrote = device()->dma().DmaWrite(0x100, data); });
  for (int i = 0; i < 3; ++i) AnswerDma(peer, guest, 0);
  device_thread.join();
  ASSERT_TRUE(wrote.has_value()) << wrote.error().Describe();
  EXPECT_EQ(guest[0x100], std::byte{0x42});
  EXPECT_EQ(guest[0x100 + 9999], std::byte{0x42});
  EXPECT_EQ(guest[0x100 + 10000], std::byte{0});
}

TEST_F(ServerTest, ClientRefusingDmaGivesTheDeviceItsErrno) {
  RawPeer peer = ConnectAndNegotiate();
  ASSERT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaMap,
                                       Payload(DmaMapPayload{32, kProtRead, 0, 0, 0x1000}))),
            0);
  std::vector<std::byte> guest(0x1000);
  Result<void> read;
  std::thread device_thread([&] {
    std::byte out[8];
    read = device()->dma().DmaRead(0, out);
  });
  AnswerDma(peer, guest, 0, ENODEV);  // QEMU's answer before bus mastering is on.
  device_thread.join();
  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(read.error().code, ENODEV);
}

TEST_F(ServerTest, DisconnectFailsMessageDmaInFlight) {
  auto peer = std::make_unique<RawPeer>(ConnectAndNegotiate());
  ASSERT_EQ(RawPeer::ErrorOf(peer->Call(Command::kDmaMap,
                                        Payload(DmaMapPayload{32, kProtRead, 0, 0, 0x1000}))),
            0);
  Result<void> read;
  std::thread device_thread([&] {
    std::byte out[8];
    read = device()->dma().DmaRead(0, out);
  });
  ASSERT_TRUE(peer->Receive().has_value());  // The DMA_READ, never answered.
  peer.reset();
  device_thread.join();
  ASSERT_FALSE(read.has_value());
}

TEST_F(ServerTest, SecondClientIsRefusedWhileOneIsAttached) {
  RawPeer first = ConnectAndNegotiate();
  RawPeer second = Connect();
  EXPECT_TRUE(second.ClosedByServer());
  EXPECT_EQ(RawPeer::ErrorOf(first.Call(Command::kDeviceReset, {})), 0);
}

TEST_F(ServerTest, PeerNotOnTheAllowListIsRefused) {
  ASSERT_TRUE(server_->SetAllowedUids(uuid_, {::geteuid() + 1}));
  RawPeer peer = Connect();
  EXPECT_TRUE(peer.ClosedByServer());
  ASSERT_TRUE(server_->SetAllowedUids(uuid_, {::geteuid()}));
  RawPeer allowed = ConnectAndNegotiate();
  EXPECT_EQ(RawPeer::ErrorOf(allowed.Call(Command::kDeviceReset, {})), 0);
  EXPECT_EQ(server_->SetAllowedUids(Uuid::Generate(), {}).error().code, ENODEV);
}

TEST_F(ServerTest, DisconnectClosesTheDeviceKeepsItsStateAndAcceptsTheNextClient) {
  const size_t fds_before = OpenFdCount();
  {
    RawPeer peer = ConnectAndNegotiate();
    EXPECT_TRUE(server_->IsConnected(uuid_));
    UniqueFd memory = GuestMemory(0x1000);
    UniqueFd event(::eventfd(0, EFD_CLOEXEC));
    const int map_fds[] = {memory.get()};
    const int irq_fds[] = {event.get()};
    ASSERT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaMap,
                                         Payload(DmaMapPayload{32, kProtRead, 0, 0, 0x1000}),
                                         map_fds)),
              0);
    ASSERT_EQ(RawPeer::ErrorOf(peer.Call(
                  Command::kDeviceSetIrqs,
                  Payload(IrqSetPayload{20, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                                        VFIO_PCI_INTX_IRQ_INDEX, 0, 1}),
                  irq_fds)),
              0);
    ASSERT_EQ(RawPeer::ErrorOf(peer.Call(
                  Command::kRegionWrite,
                  Payload(RegionAccessPayload{0x80, VFIO_PCI_CONFIG_REGION_INDEX, 1}, uint8_t{0x5c}))),
              0);
  }
  // The server notices the hang-up on its loop thread.
  for (int i = 0; i < 500 && server_->IsConnected(uuid_); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(server_->IsConnected(uuid_));
  EXPECT_EQ(parent_->counters()->closes, 1);
  EXPECT_EQ(OpenFdCount(), fds_before);  // Mapping fd, eventfd and socket all closed.
  std::byte out[4];
  EXPECT_FALSE(device()->dma().DmaRead(0, out).has_value());

  RawPeer next = ConnectAndNegotiate();
  Message read = next.Call(Command::kRegionRead,
                           Payload(RegionAccessPayload{0x80, VFIO_PCI_CONFIG_REGION_INDEX, 1}));
  ASSERT_EQ(read.payload.size(), 17u);
  EXPECT_EQ(read.payload.back(), std::byte{0x5c});
}

TEST_F(ServerTest, RemovingTheInstanceDisconnectsItsClient) {
  RawPeer peer = ConnectAndNegotiate();
  ASSERT_TRUE(registry_->RemoveMdev(uuid_));
  EXPECT_TRUE(peer.ClosedByServer());
  EXPECT_FALSE(std::filesystem::exists(server_->SocketPath(uuid_)));
}

TEST_F(ServerTest, StopDisconnectsClientsAndRemovesSockets) {
  RawPeer peer = ConnectAndNegotiate();
  server_->Stop();
  EXPECT_TRUE(peer.ClosedByServer());
  EXPECT_FALSE(std::filesystem::exists(server_->SocketPath(uuid_)));
  EXPECT_EQ(parent_->counters()->closes, 1);
}

}  // namespace
}  // namespace umdev::vfio_user::testing
