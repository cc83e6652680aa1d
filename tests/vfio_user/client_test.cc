// Client against a scripted peer on a socketpair: VERSION, the typed
// commands' exact requests, reply checking, errors and timeouts.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "client_peer.h"

namespace umdev::vfio_user {
namespace {

using testing::Connected;
using testing::Pod;
using testing::ScriptedPeer;
using testing::VersionReply;
using namespace std::chrono_literals;

TEST(ClientVersionTest, OffersQemusCapabilitiesAndRecordsTheServers) {
  ScriptedPeer peer;
  auto client = std::async(std::launch::async,
                           [&peer] { return Client::Adopt(peer.TakeClientEnd()); });
  Message version = peer.Expect(Command::kVersion);
  EXPECT_EQ(version.header.flags, kTypeCommand);
  auto offer = LoadPayload<VersionPayload>(version.payload);
  ASSERT_TRUE(offer.has_value());
  EXPECT_EQ(offer->major, 0);
  EXPECT_EQ(offer->minor, 0);
  ASSERT_EQ(version.payload.back(), std::byte{0});
  const auto json = nlohmann::json::parse(
      reinterpret_cast<const char*>(version.payload.data() + sizeof(VersionPayload)));
  const auto& caps = json["capabilities"];
  EXPECT_EQ(caps["max_msg_fds"], 16);
  EXPECT_EQ(caps["max_data_xfer_size"], 1u << 20);
  EXPECT_EQ(caps["pgsizes"], 4096);
  EXPECT_EQ(caps["max_dma_maps"], 65535);
  EXPECT_EQ(caps["write_multiple"], true);
  EXPECT_EQ(caps["migration"]["pgsize"], 4096);
  peer.Reply(version, VersionReply(R"({"capabilities":{"max_msg_fds":8,)"
                                   R"("max_data_xfer_size":65536,"pgsizes":8192,)"
                                   R"("max_dma_maps":100,"future":{}}})"));
  auto connected = client.get();
  ASSERT_TRUE(connected.has_value()) << connected.error().Describe();
  const Capabilities got = (*connected)->server_caps();
  EXPECT_EQ(got.max_msg_fds, 8u);
  EXPECT_EQ(got.max_data_xfer_size, 65536u);
  EXPECT_EQ(got.pgsizes, 8192u);
  EXPECT_EQ(got.max_dma_maps, 100u);
  EXPECT_FALSE(got.write_multiple);
  EXPECT_TRUE((*connected)->connected());
}

TEST(ClientVersionTest, EmptyCapabilitiesTakeTheSpecDefaults) {
  ScriptedPeer peer;
  auto client = Connected(peer, "{}");
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->server_caps().max_msg_fds, 1u);
  EXPECT_EQ(client->server_caps().max_data_xfer_size, 1u << 20);
}

struct BadReply {
  const char* what;
  std::vector<std::byte> payload;
};

TEST(ClientVersionTest, RejectsRepliesQemuWouldReject) {
  const std::vector<BadReply> cases = {
      {"major 1", VersionReply("{}", 1, 0)},
      {"minor above ours", VersionReply("{}", 0, 1)},
      {"no NUL", VersionReply("{}", 0, 0, false)},
      {"no JSON at all", Pod(VersionPayload{0, 0})},
      {"short payload", Pod(uint16_t{0})},
      {"not JSON", VersionReply("{nope")},
      {"max_msg_fds over 16", VersionReply(R"({"capabilities":{"max_msg_fds":17}})")},
      {"huge transfers", VersionReply(R"({"capabilities":{"max_data_xfer_size":67108865}})")},
      {"odd pgsizes", VersionReply(R"({"capabilities":{"pgsizes":1000}})")},
      {"more dma maps", VersionReply(R"({"capabilities":{"max_dma_maps":65536}})")},
      {"wrong type", VersionReply(R"({"capabilities":{"max_msg_fds":"8"}})")},
  };
  for (const BadReply& bad : cases) {
    ScriptedPeer peer;
    auto client = std::async(std::launch::async,
                             [&peer] { return Client::Adopt(peer.TakeClientEnd()); });
    Message version = peer.Expect(Command::kVersion);
    peer.Reply(version, bad.payload);
    auto result = client.get();
    ASSERT_FALSE(result.has_value()) << bad.what;
    EXPECT_EQ(result.error().code, EPROTO) << bad.what;
  }
}

TEST(ClientVersionTest, AnErrorReplyIsTheServersErrno) {
  ScriptedPeer peer;
  auto client = std::async(std::launch::async,
                           [&peer] { return Client::Adopt(peer.TakeClientEnd()); });
  peer.ReplyError(peer.Expect(Command::kVersion), ENOTSUP);
  auto result = client.get();
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code, ENOTSUP);
}

TEST(ClientVersionTest, WithoutNegotiateCallsGoOutBeforeVersion) {
  ScriptedPeer peer;
  ClientOptions options;
  options.negotiate = false;
  auto client = Client::Adopt(peer.TakeClientEnd(), options);
  ASSERT_TRUE(client.has_value());
  auto reset = std::async(std::launch::async, [&] { return (*client)->Call(Command::kDeviceReset, {}); });
  Message request = peer.Expect(Command::kDeviceReset);
  peer.ReplyError(request, EINVAL);
  auto reply = reset.get();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(ScriptedPeer::ErrorOf(*reply), EINVAL);  // Call returns the raw reply.
  EXPECT_EQ(reply->header.msg_id, request.header.msg_id);
}

// The reply to GET_REGION_INFO for a 64 KiB mmappable BAR with two sparse
// areas, a type cap and the MSI-X-mappable mark, cut to |argsz| as a server does.
std::vector<std::byte> RegionReply(uint32_t argsz) {
  std::vector<std::byte> caps;
  vfio_region_info_cap_sparse_mmap sparse{};
  sparse.header.id = VFIO_REGION_INFO_CAP_SPARSE_MMAP;
  sparse.header.version = 1;
  sparse.header.next = 32 + 16 + 32;
  sparse.nr_areas = 2;
  AppendPod(caps, sparse);
  AppendPod(caps, vfio_region_sparse_mmap_area{0x0, 0x1000});
  AppendPod(caps, vfio_region_sparse_mmap_area{0x8000, 0x2000});
  vfio_region_info_cap_type type{};
  type.header.id = VFIO_REGION_INFO_CAP_TYPE;
  type.header.version = 1;
  type.type = 3;
  type.subtype = 4;
  type.header.next = 32 + 48 + 16;
  AppendPod(caps, type);
  AppendPod(caps, vfio_info_cap_header{VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, 0});
  vfio_region_info info{};
  info.argsz = static_cast<uint32_t>(32 + caps.size());
  info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
               VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS;
  info.index = 2;
  info.cap_offset = 32;
  info.size = 0x10000;
  info.offset = 0x20000;
  std::vector<std::byte> out = Pod(info);
  if (argsz >= info.argsz) AppendBytes(out, caps);
  return out;
}

TEST(ClientRegionInfoTest, AsksAgainWithTheArgszTheServerWants) {
  ScriptedPeer peer;
  auto client = Connected(peer);
  auto info = std::async(std::launch::async, [&] { return client->GetRegionInfo(2); });
  Message first = peer.Expect(Command::kDeviceGetRegionInfo);
  auto query = LoadPayload<vfio_region_info>(first.payload);
  ASSERT_TRUE(query.has_value());
  EXPECT_EQ(first.payload.size(), 32u);
  EXPECT_EQ(query->argsz, 32u);
  EXPECT_EQ(query->index, 2u);
  peer.Reply(first, RegionReply(32));
  Message second = peer.Expect(Command::kDeviceGetRegionInfo);
  query = LoadPayload<vfio_region_info>(second.payload);
  ASSERT_TRUE(query.has_value());
  EXPECT_EQ(query->argsz, 32u + 48 + 16 + 8);
  UniqueFd region_fd(::eventfd(0, EFD_CLOEXEC));
  const int fd = region_fd.get();
  peer.Reply(second, RegionReply(query->argsz), std::span(&fd, 1));
  auto got = info.get();
  ASSERT_TRUE(got.has_value()) << got.error().Describe();
  EXPECT_EQ(got->index, 2u);
  EXPECT_EQ(got->size, 0x10000u);
  EXPECT_EQ(got->offset, 0x20000u);
  EXPECT_NE(got->flags & VFIO_REGION_INFO_FLAG_MMAP, 0u);
  ASSERT_TRUE(got->sparse_areas.has_value());
  ASSERT_EQ(got->sparse_areas->size(), 2u);
  EXPECT_EQ((*got->sparse_areas)[1].offset, 0x8000u);
  EXPECT_EQ((*got->sparse_areas)[1].size, 0x2000u);
  ASSERT_TRUE(got->type.has_value());
  EXPECT_EQ(got->type->type, 3u);
  EXPECT_EQ(got->type->subtype, 4u);
  EXPECT_TRUE(got->msix_mappable);
  EXPECT_TRUE(got->fd.valid());
}

TEST(ClientRegionInfoTest, ARegionWithoutCapsTakesOneStep) {
  ScriptedPeer peer;
  auto client = Connected(peer);
  auto info = std::async(std::launch::async, [&] { return client->GetRegionInfo(7); });
  Message request = peer.Expect(Command::kDeviceGetRegionInfo);
  vfio_region_info reply{};
  reply.argsz = 32;
  reply.flags = VFIO_REGION_INFO_FLAG_READ;
  reply.index = 7;
  reply.size = 256;
  peer.Reply(request, Pod(reply));
  auto got = info.get();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->size, 256u);
  EXPECT_FALSE(got->sparse_areas.has_value());
  EXPECT_FALSE(got->msix_mappable);
  EXPECT_FALSE(got->fd.valid());
}

TEST(ClientRegionInfoTest, ABrokenCapabilityChainIsEproto) {
  ScriptedPeer peer;
  auto client = Connected(peer);
  auto info = std::async(std::launch::async, [&] { return client->GetRegionInfo(0); });
  Message request = peer.Expect(Command::kDeviceGetRegionInfo);
  vfio_region_info reply{};
  reply.argsz = 32;
  reply.flags = VFIO_REGION_INFO_FLAG_CAPS;
  reply.cap_offset = 8;  // Inside the fixed part.
  peer.Reply(request, Pod(reply));
  auto got = info.get();
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code, EPROTO);
}

// Receives one SET_IRQS and answers it; returns its header and fd count.
std::pair<IrqSetPayload, size_t> TakeSetIrqs(ScriptedPeer& peer) {
  Message request = peer.Expect(Command::kDeviceSetIrqs);
  auto set = LoadPayload<IrqSetPayload>(request.payload);
  EXPECT_TRUE(set.has_value());
  EXPECT_EQ(request.payload.size(), sizeof(IrqSetPayload));
  peer.Reply(request, {});
  return {set.value_or(IrqSetPayload{}), request.fds.size()};
}

TEST(ClientIrqTest, EventfdsAreChunkedToTheServersMaxMsgFds) {
  ScriptedPeer peer;
  auto client = Connected(peer, R"({"capabilities":{"max_msg_fds":2}})");
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (int i = 0; i < 5; ++i) {
    owned.emplace_back(::eventfd(0, EFD_CLOEXEC));
    fds.push_back(owned.back().get());
  }
  auto done = std::async(std::launch::async, [&] {
    return client->SetIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, 3, VFIO_IRQ_SET_ACTION_TRIGGER, fds);
  });
  const uint32_t expected_starts[] = {3, 5, 7};
  const uint32_t expected_counts[] = {2, 2, 1};
  for (int i = 0; i < 3; ++i) {
    auto [set, nfds] = TakeSetIrqs(peer);
    EXPECT_EQ(set.argsz, 20u);
    EXPECT_EQ(set.flags, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER);
    EXPECT_EQ(set.index, uint32_t{VFIO_PCI_MSIX_IRQ_INDEX});
    EXPECT_EQ(set.start, expected_starts[i]);
    EXPECT_EQ(set.count, expected_counts[i]);
    EXPECT_EQ(nfds, expected_counts[i]);
  }
  ASSERT_TRUE(done.get().has_value());
}

TEST(ClientIrqTest, RunsOfInvalidFdsGoWithoutFds) {
  ScriptedPeer peer;
  auto client = Connected(peer, R"({"capabilities":{"max_msg_fds":2}})");
  UniqueFd a(::eventfd(0, EFD_CLOEXEC));
  UniqueFd b(::eventfd(0, EFD_CLOEXEC));
  const std::vector<int> fds = {a.get(), -1, -1, -1, b.get()};
  auto done = std::async(std::launch::async, [&] {
    return client->SetIrqEventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, VFIO_IRQ_SET_ACTION_TRIGGER, fds);
  });
  const std::pair<uint32_t, uint32_t> expected[] = {{0, 1}, {1, 2}, {3, 1}, {4, 1}};
  const size_t expected_fds[] = {1, 0, 0, 1};
  for (int i = 0; i < 4; ++i) {
    auto [set, nfds] = TakeSetIrqs(peer);
    EXPECT_EQ(set.start, expected[i].first) << i;
    EXPECT_EQ(set.count, expected[i].second) << i;
    EXPECT_EQ(nfds, expected_fds[i]) << i;
  }
  ASSERT_TRUE(done.get().has_value());
}

TEST(ClientIrqTest, DataNoneAndBoolEncodings) {
  ScriptedPeer peer;
  auto client = Connected(peer);
  auto none = std::async(std::launch::async, [&] {
    return client->SetIrqsNone(VFIO_PCI_INTX_IRQ_INDEX, 0, 1, VFIO_IRQ_SET_ACTION_UNMASK);
  });
  auto [set, nfds] = TakeSetIrqs(peer);
  EXPECT_EQ(set.flags, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK);
  EXPECT_EQ(set.count, 1u);
  EXPECT_EQ(nfds, 0u);
  ASSERT_TRUE(none.get().has_value());

  const std::vector<uint8_t> values = {1, 0, 1};
  auto bools = std::async(std::launch::async, [&] {
    return client->SetIrqsBool(VFIO_PCI_MSI_IRQ_INDEX, 2, VFIO_IRQ_SET_ACTION_MASK, values);
  });
  Message request = peer.Expect(Command::kDeviceSetIrqs);
  ASSERT_EQ(request.payload.size(), 23u);
  auto header = LoadPayload<IrqSetPayload>(request.payload);
  EXPECT_EQ(header->argsz, 23u);
  EXPECT_EQ(header->flags, VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_MASK);
  EXPECT_EQ(header->start, 2u);
  EXPECT_EQ(header->count, 3u);
  EXPECT_EQ(request.payload[20], std::byte{1});
  EXPECT_EQ(request.payload[21], std::byte{0});
  peer.Reply(request, {});
  ASSERT_TRUE(bools.get().has_value());
}

TEST(ClientTransferTest, ReadsAreSplitAtTheServersMaxDataXferSize) {
  ScriptedPeer peer;
  auto client = Connected(peer, R"({"capabilities":{"max_data_xfer_size":4096}})");
  std::vector<std::byte> out(10000);
  auto read = std::async(std::launch::async, [&] { return client->RegionRead(0, 0x100, out); });
  const uint32_t counts[] = {4096, 4096, 1808};
  uint64_t offset = 0x100;
  for (uint32_t count : counts) {
    Message request = peer.Expect(Command::kRegionRead);
    auto access = LoadPayload<RegionAccessPayload>(request.payload);
    ASSERT_TRUE(access.has_value());
    EXPECT_EQ(request.payload.size(), sizeof(RegionAccessPayload));
    EXPECT_EQ(access->offset, offset);
    EXPECT_EQ(access->count, count);
    std::vector<std::byte> reply = Pod(*access);
    for (uint32_t i = 0; i < count; ++i) reply.push_back(std::byte(offset + i));
    peer.Reply(request, reply);
    offset += count;
  }
  auto got = read.get();
  ASSERT_TRUE(got.has_value()) << got.error().Describe();
  EXPECT_EQ(*got, 10000u);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], std::byte(0x100 + i)) << i;
}

TEST(ClientTransferTest, WritesAreSplitAndPostedWritesDoNotWait) {
  ScriptedPeer peer;
  auto client = Connected(peer, R"({"capabilities":{"max_data_xfer_size":4096}})");
  std::vector<std::byte> data(5000, std::byte{0x5a});
  auto write = std::async(std::launch::async, [&] { return client->RegionWrite(1, 0, data); });
  for (uint32_t count : {4096u, 904u}) {
    Message request = peer.Expect(Command::kRegionWrite);
    EXPECT_EQ(request.header.flags, kTypeCommand);
    EXPECT_EQ(request.payload.size(), sizeof(RegionAccessPayload) + count);
    peer.Reply(request, std::span(request.payload).first(sizeof(RegionAccessPayload)));
  }
  ASSERT_TRUE(write.get().has_value());
  // Posted: returns without any reply from the peer.
  ASSERT_TRUE(client->RegionWrite(1, 8, std::span(data).first(4), WriteMode::kPosted).has_value());
  Message posted = peer.Expect(Command::kRegionWrite);
  EXPECT_EQ(posted.header.flags, kTypeCommand | kFlagNoReply);
  EXPECT_EQ(posted.payload.size(), sizeof(RegionAccessPayload) + 4);
}

TEST(ClientTransferTest, AShortReadEndsTheTransferAndALongOneIsE2big) {
  ScriptedPeer peer;
  auto client = Connected(peer);
  std::vector<std::byte> out(8);
  auto read = std::async(std::launch::async, [&] { return client->RegionRead(7, 0, out); });
  Message request = peer.Expect(Command::kRegionRead);
  std::vector<std::byte> reply = Pod(RegionAccessPayload{0, 7, 2});
  reply.resize(reply.size() + 2, std::byte{0xab});
  peer.Reply(request, reply);
  ASSERT_EQ(read.get().value_or(99), 2u);

  read = std::async(std::launch::async, [&] { return client->RegionRead(7, 0, out); });
  request = peer.Expect(Command::kRegionRead);
  reply = Pod(RegionAccessPayload{0, 7, 9});
  reply.resize(reply.size() + 9);
  peer.Reply(request, reply);
  auto got = read.get();
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code, E2BIG);
}

TEST(ClientErrorTest, ErrorRepliesCarryTheServersErrno) {
  ScriptedPeer peer;
  auto client = Connected(peer);
  auto info = std::async(std::launch::async, [&] { return client->GetIrqInfo(9); });
  peer.ReplyError(peer.Expect(Command::kDeviceGetIrqInfo), EINVAL);
  auto got = info.get();
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code, EINVAL);

  auto reset = std::async(std::launch::async, [&] { return client->Reset(); });
  peer.ReplyError(peer.Expect(Command::kDeviceReset), 0);  // ERROR without an errno.
  auto reset_result = reset.get();
  ASSERT_FALSE(reset_result.has_value());
  EXPECT_EQ(reset_result.error().code, EIO);
}

TEST(ClientErrorTest, ShortAndMismatchedRepliesAreEproto) {
  ScriptedPeer peer;
  auto client = Connected(peer);
  auto info = std::async(std::launch::async, [&] { return client->GetDeviceInfo(); });
  Message request = peer.Expect(Command::kDeviceGetInfo);
  peer.Reply(request, Pod(uint32_t{16}));
  ASSERT_EQ(info.get().error().code, EPROTO);

  info = std::async(std::launch::async, [&] { return client->GetDeviceInfo(); });
  request = peer.Expect(Command::kDeviceGetInfo);
  request.header.command = static_cast<uint16_t>(Command::kDeviceReset);
  peer.Reply(request, Pod(DeviceInfoPayload{16, 3, 9, 5}));
  ASSERT_EQ(info.get().error().code, EPROTO);
}

TEST(ClientErrorTest, AnUnansweredCallTimesOutAndItsLateReplyIsDropped) {
  ScriptedPeer peer;
  ClientOptions options;
  options.timeout = 50ms;
  auto client = Connected(peer, R"({"capabilities":{}})", options);
  ASSERT_NE(client, nullptr);
  auto reset = client->Reset();
  ASSERT_FALSE(reset.has_value());
  EXPECT_EQ(reset.error().code, ETIMEDOUT);
  Message late = peer.Expect(Command::kDeviceReset);
  peer.Reply(late, {});
  for (int i = 0; i < 1000 && client->unexpected_replies() == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(client->unexpected_replies(), 1u);
  // The connection still works.
  client->set_timeout(10s);
  auto info = std::async(std::launch::async, [&] { return client->GetDeviceInfo(); });
  Message request = peer.Expect(Command::kDeviceGetInfo);
  peer.Reply(request, Pod(DeviceInfoPayload{16, VFIO_DEVICE_FLAGS_PCI, 9, 5}));
  auto got = info.get();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->num_regions, 9u);
  EXPECT_EQ(got->num_irqs, 5u);
}

TEST(ClientCommandTest, DmaMapCarriesTheFdAndUnmapAllItsFlag) {
  ScriptedPeer peer;
  auto client = Connected(peer);
  UniqueFd memory(::eventfd(0, EFD_CLOEXEC));
  auto map = std::async(std::launch::async, [&] {
    return client->DmaMap(0x100000, 0x2000, VFIO_DMA_MAP_FLAG_READ, memory.get(), 0x3000);
  });
  Message request = peer.Expect(Command::kDmaMap);
  auto payload = LoadPayload<DmaMapPayload>(request.payload);
  ASSERT_TRUE(payload.has_value());
  EXPECT_EQ(payload->argsz, 32u);
  EXPECT_EQ(payload->flags, uint32_t{VFIO_DMA_MAP_FLAG_READ});
  EXPECT_EQ(payload->offset, 0x3000u);
  EXPECT_EQ(payload->address, 0x100000u);
  EXPECT_EQ(payload->size, 0x2000u);
  EXPECT_EQ(request.fds.size(), 1u);
  peer.Reply(request, {});
  ASSERT_TRUE(map.get().has_value());

  auto unmap = std::async(std::launch::async, [&] { return client->DmaUnmapAll(); });
  request = peer.Expect(Command::kDmaUnmap);
  auto all = LoadPayload<DmaUnmapPayload>(request.payload);
  ASSERT_TRUE(all.has_value());
  EXPECT_EQ(all->argsz, 24u);
  EXPECT_EQ(all->flags, uint32_t{VFIO_DMA_UNMAP_FLAG_ALL});
  EXPECT_EQ(all->address, 0u);
  EXPECT_EQ(all->size, 0u);
  peer.Reply(request, request.payload);
  ASSERT_TRUE(unmap.get().has_value());
}

TEST(ClientCommandTest, MigrationHelpersUseTheKernelFeatureLayout) {
  ScriptedPeer peer;
  auto client = Connected(peer);
  auto set = std::async(std::launch::async,
                        [&] { return client->SetMigrationState(VFIO_DEVICE_STATE_STOP); });
  Message request = peer.Expect(Command::kDeviceFeature);
  ASSERT_EQ(request.payload.size(), 16u);
  auto feature = LoadPayload<DeviceFeaturePayload>(request.payload);
  EXPECT_EQ(feature->argsz, 16u);
  EXPECT_EQ(feature->flags, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE);
  EXPECT_EQ(LoadPayload<uint32_t>(request.payload, 8), uint32_t{VFIO_DEVICE_STATE_STOP});
  peer.Reply(request, request.payload);
  ASSERT_TRUE(set.get().has_value());

  auto state = std::async(std::launch::async, [&] { return client->GetMigrationState(); });
  request = peer.Expect(Command::kDeviceFeature);
  EXPECT_EQ(request.payload.size(), 8u);
  peer.Reply(request, Pod(DeviceFeaturePayload{16, VFIO_DEVICE_FEATURE_GET |
                                                       VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE},
                          uint32_t{VFIO_DEVICE_STATE_STOP_COPY}, int32_t{-1}));
  EXPECT_EQ(state.get().value_or(0), uint32_t{VFIO_DEVICE_STATE_STOP_COPY});

  auto read = std::async(std::launch::async, [&] { return client->MigDataRead(64); });
  request = peer.Expect(Command::kMigDataRead);
  EXPECT_EQ(LoadPayload<MigDataPayload>(request.payload)->argsz, 72u);
  std::vector<std::byte> reply = Pod(MigDataPayload{72, 3});
  reply.resize(reply.size() + 3, std::byte{7});
  peer.Reply(request, reply);
  auto data = read.get();
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(data->size(), 3u);
}

TEST(ClientCommandTest, WriteMultiNeedsTheServersOffer) {
  ScriptedPeer peer;
  auto client = Connected(peer, "{}");
  const WriteMultiEntry entry{0x10, 0, 4, {1, 2, 3, 4}};
  auto result = client->RegionWriteMulti(std::span(&entry, 1));
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code, EOPNOTSUPP);
}

TEST(ClientCommandTest, WriteMultiSendsAtMost200EntriesAMessage) {
  ScriptedPeer peer;
  auto client = Connected(peer);
  std::vector<WriteMultiEntry> writes(250, WriteMultiEntry{0, 0, 1, {9}});
  ASSERT_TRUE(client->RegionWriteMulti(writes).has_value());
  for (uint64_t count : {200u, 50u}) {
    Message request = peer.Expect(Command::kRegionWriteMulti);
    EXPECT_EQ(request.header.flags, kTypeCommand | kFlagNoReply);
    EXPECT_EQ(LoadPayload<uint64_t>(request.payload), count);
    EXPECT_EQ(request.payload.size(), 8 + count * sizeof(WriteMultiEntry));
  }
}

}  // namespace
}  // namespace umdev::vfio_user
