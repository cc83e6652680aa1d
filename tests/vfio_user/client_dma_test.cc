// Client as a DMA target and under concurrency: the server's DMA_READ and
// DMA_WRITE answered from guest memory at any time, replies routed to the
// right caller, and disconnects waking every waiter.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <future>
#include <thread>

#include "client_peer.h"
#include "umdev/common/mapping.h"

namespace umdev::vfio_user {
namespace {

using testing::Connected;
using testing::Pod;
using testing::ScriptedPeer;
using namespace std::chrono_literals;

constexpr uint64_t kIova = 0x100000;
constexpr uint64_t kSize = 0x4000;

// A client with kSize bytes of fd-less guest memory at kIova.
struct WithMemory {
  ScriptedPeer peer;
  std::unique_ptr<Client> client;
  std::span<std::byte> memory;

  explicit WithMemory(bool share_fd = false,
                      uint32_t prot = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE) {
    client = Connected(peer);
    auto added = std::async(std::launch::async, [&] {
      return client->AddGuestMemory(kIova, kSize, share_fd, prot);
    });
    map_request = peer.Expect(Command::kDmaMap);
    peer.Reply(map_request, {});
    auto got = added.get();
    EXPECT_TRUE(got.has_value()) << got.error().Describe();
    if (got.has_value()) memory = *got;
  }
  Message map_request;
};

std::vector<std::byte> ReadRequest(uint64_t address, uint64_t count) {
  return Pod(DmaAccessPayload{address, count});
}

std::vector<std::byte> WriteRequest(uint64_t address, std::string_view data) {
  std::vector<std::byte> out = Pod(DmaAccessPayload{address, data.size()});
  AppendBytes(out, std::as_bytes(std::span(data)));
  return out;
}

TEST(ClientDmaTest, FdLessMemoryIsMappedWithoutAnFd) {
  WithMemory setup;
  auto map = LoadPayload<DmaMapPayload>(setup.map_request.payload);
  ASSERT_TRUE(map.has_value());
  EXPECT_EQ(map->address, kIova);
  EXPECT_EQ(map->size, kSize);
  EXPECT_EQ(map->flags, uint32_t{VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE});
  EXPECT_TRUE(setup.map_request.fds.empty());
}

TEST(ClientDmaTest, DmaReadWhileIdleReturnsGuestMemory) {
  WithMemory setup;
  const std::string_view text = "device reads this";
  ASSERT_TRUE(setup.client->WriteGuestMemory(kIova + 0x10, std::as_bytes(std::span(text))).has_value());
  Message reply = setup.peer.RequestAndWait(Command::kDmaRead, ReadRequest(kIova + 0x10, text.size()));
  EXPECT_EQ(ScriptedPeer::ErrorOf(reply), 0);
  ASSERT_EQ(reply.payload.size(), 16 + text.size());
  auto echo = LoadPayload<DmaAccessPayload>(reply.payload);
  EXPECT_EQ(echo->address, kIova + 0x10);
  EXPECT_EQ(echo->count, text.size());
  EXPECT_EQ(std::memcmp(reply.payload.data() + 16, text.data(), text.size()), 0);
  EXPECT_EQ(setup.client->requests_served(), 1u);
}

TEST(ClientDmaTest, DmaWriteLandsInGuestMemoryAndIsAnsweredWithAddrAndCount) {
  WithMemory setup;
  Message reply = setup.peer.RequestAndWait(Command::kDmaWrite, WriteRequest(kIova + kSize - 4, "tail"));
  EXPECT_EQ(ScriptedPeer::ErrorOf(reply), 0);
  ASSERT_EQ(reply.payload.size(), 16u);
  EXPECT_EQ(LoadPayload<DmaAccessPayload>(reply.payload)->count, 4u);
  std::byte out[4];
  ASSERT_TRUE(setup.client->ReadGuestMemory(kIova + kSize - 4, out).has_value());
  EXPECT_EQ(std::memcmp(out, "tail", 4), 0);
}

TEST(ClientDmaTest, RequestsOutsideMemoryTooLargeOrWithFdsFail) {
  WithMemory setup;
  ScriptedPeer& peer = setup.peer;
  EXPECT_EQ(ScriptedPeer::ErrorOf(peer.RequestAndWait(Command::kDmaRead, ReadRequest(kIova - 1, 2))),
            EFAULT);
  EXPECT_EQ(ScriptedPeer::ErrorOf(peer.RequestAndWait(Command::kDmaWrite, WriteRequest(kIova + kSize, "x"))),
            EFAULT);
  EXPECT_EQ(ScriptedPeer::ErrorOf(peer.RequestAndWait(Command::kDmaRead, ReadRequest(~0ull, 2))), EFAULT);
  EXPECT_EQ(ScriptedPeer::ErrorOf(
                peer.RequestAndWait(Command::kDmaRead, ReadRequest(kIova, (1u << 20) + 1))),
            E2BIG);
  UniqueFd extra(::eventfd(0, EFD_CLOEXEC));
  const int fd = extra.get();
  EXPECT_EQ(ScriptedPeer::ErrorOf(
                peer.RequestAndWait(Command::kDmaRead, ReadRequest(kIova, 2), std::span(&fd, 1))),
            EINVAL);
  // DMA_WRITE whose data does not match its count; DMA_READ carrying data.
  std::vector<std::byte> lying = WriteRequest(kIova, "abc");
  lying.pop_back();
  EXPECT_EQ(ScriptedPeer::ErrorOf(peer.RequestAndWait(Command::kDmaWrite, lying)), EINVAL);
  EXPECT_EQ(ScriptedPeer::ErrorOf(peer.RequestAndWait(Command::kDmaRead, WriteRequest(kIova, "a"))),
            EINVAL);
  EXPECT_EQ(ScriptedPeer::ErrorOf(peer.RequestAndWait(Command::kDmaRead, Pod(uint64_t{kIova}))),
            EINVAL);
  // Only DMA_READ/DMA_WRITE go from server to client.
  EXPECT_EQ(ScriptedPeer::ErrorOf(peer.RequestAndWait(Command::kRegionRead, ReadRequest(0, 4))),
            ENOSYS);
}

TEST(ClientDmaTest, ReadOnlyMemoryRefusesDmaWrite) {
  WithMemory setup(false, VFIO_DMA_MAP_FLAG_READ);
  EXPECT_EQ(ScriptedPeer::ErrorOf(setup.peer.RequestAndWait(Command::kDmaWrite, WriteRequest(kIova, "x"))),
            EPERM);
  EXPECT_EQ(ScriptedPeer::ErrorOf(setup.peer.RequestAndWait(Command::kDmaRead, ReadRequest(kIova, 1))), 0);
}

TEST(ClientDmaTest, SharedMemoryIsTheFdTheServerMaps) {
  WithMemory setup(true);
  ASSERT_EQ(setup.map_request.fds.size(), 1u);
  auto mapping = Mapping::Map(setup.map_request.fds[0].get(), 0, kSize, PROT_READ | PROT_WRITE,
                              MAP_SHARED);
  ASSERT_TRUE(mapping.has_value());
  std::memcpy(mapping->data() + 0x100, "direct", 6);
  std::byte out[6];
  ASSERT_TRUE(setup.client->ReadGuestMemory(kIova + 0x100, out).has_value());
  EXPECT_EQ(std::memcmp(out, "direct", 6), 0);
  // Message DMA still works on fd-backed memory.
  Message reply = setup.peer.RequestAndWait(Command::kDmaRead, ReadRequest(kIova + 0x100, 6));
  ASSERT_EQ(reply.payload.size(), 22u);
  EXPECT_EQ(std::memcmp(reply.payload.data() + 16, "direct", 6), 0);
}

TEST(ClientDmaTest, DmaDuringAPendingCallIsAnsweredFirst) {
  WithMemory setup;
  ASSERT_TRUE(setup.client->WriteGuestMemory(kIova, std::as_bytes(std::span("ring", 4))).has_value());
  auto reset = std::async(std::launch::async, [&] { return setup.client->Reset(); });
  Message request = setup.peer.Expect(Command::kDeviceReset);
  // The device does DMA while serving the command, before replying.
  Message dma = setup.peer.RequestAndWait(Command::kDmaRead, ReadRequest(kIova, 4));
  ASSERT_EQ(dma.payload.size(), 20u);
  EXPECT_EQ(std::memcmp(dma.payload.data() + 16, "ring", 4), 0);
  setup.peer.Reply(request, {});
  ASSERT_TRUE(reset.get().has_value());
}

TEST(ClientDmaTest, NoReplyRequestsAreServedSilently) {
  WithMemory setup;
  setup.peer.Request(Command::kDmaWrite, WriteRequest(kIova, "quiet"), {},
                     kTypeCommand | kFlagNoReply);
  // The next reply on the socket is the one for this read, not for the write.
  Message reply = setup.peer.RequestAndWait(Command::kDmaRead, ReadRequest(kIova, 5));
  ASSERT_EQ(reply.payload.size(), 21u);
  EXPECT_EQ(std::memcmp(reply.payload.data() + 16, "quiet", 5), 0);
}

TEST(ClientDmaTest, RemovedMemoryIsUnmappedThenUnreachable) {
  WithMemory setup;
  auto removed = std::async(std::launch::async, [&] { return setup.client->RemoveGuestMemory(kIova); });
  Message unmap = setup.peer.Expect(Command::kDmaUnmap);
  auto payload = LoadPayload<DmaUnmapPayload>(unmap.payload);
  EXPECT_EQ(payload->address, kIova);
  EXPECT_EQ(payload->size, kSize);
  setup.peer.Reply(unmap, unmap.payload);
  ASSERT_TRUE(removed.get().has_value());
  EXPECT_EQ(ScriptedPeer::ErrorOf(setup.peer.RequestAndWait(Command::kDmaRead, ReadRequest(kIova, 1))),
            EFAULT);
  EXPECT_EQ(setup.client->RemoveGuestMemory(kIova).error().code, ENOENT);
}

TEST(ClientDmaTest, OverlappingGuestMemoryIsEexist) {
  WithMemory setup;
  std::vector<std::byte> more(0x1000);
  EXPECT_EQ(setup.client->AddGuestMemory(kIova + kSize - 0x1000, more).error().code, EEXIST);
  EXPECT_EQ(setup.client->AddGuestMemory(kIova - 0x800, more).error().code, EEXIST);
}

TEST(ClientConcurrencyTest, RepliesReachTheirOwnCallersAmidDma) {
  WithMemory setup;
  constexpr int kThreads = 4;
  constexpr int kCalls = 50;
  std::atomic<bool> stop{false};
  // The peer answers GET_IRQ_INFO with count = index, out of order, and
  // sends a DMA_WRITE before every other answer.
  std::thread server([&] {
    std::vector<Message> held;
    int answered = 0;
    int dma = 0;
    auto flush = [&] {
      for (auto it = held.rbegin(); it != held.rend(); ++it) {
        if (++dma % 2 == 0) setup.peer.Request(Command::kDmaWrite, WriteRequest(kIova, "z"));
        auto query = LoadPayload<vfio_irq_info>(it->payload).value();
        setup.peer.Reply(*it, Pod(vfio_irq_info{16, 0, query.index, query.index}));
        ++answered;
      }
      held.clear();
    };
    while (answered < kThreads * kCalls) {
      auto message = setup.peer.Receive(held.empty() ? 10s : 2ms);
      if (!message.has_value()) {
        if (message.error().code != ETIMEDOUT || held.empty()) break;
        flush();  // Nothing more is coming for now.
        continue;
      }
      if (message->is_reply()) continue;  // Our DMA replies.
      held.push_back(std::move(*message));
      if (held.size() >= 3) flush();
    }
    stop = true;
  });
  std::vector<std::thread> callers;
  std::atomic<int> wrong{0};
  for (int t = 0; t < kThreads; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const uint32_t index = static_cast<uint32_t>(t * 1000 + i);
        auto info = setup.client->GetIrqInfo(index);
        if (!info.has_value() || info->count != index) ++wrong;
      }
    });
  }
  for (auto& caller : callers) caller.join();
  server.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_TRUE(stop.load());
  EXPECT_EQ(setup.client->unexpected_replies(), 0u);
}

TEST(ClientConcurrencyTest, ServerDisconnectWakesEveryWaiter) {
  ScriptedPeer peer;
  auto client = Connected(peer);
  std::vector<std::future<Result<void>>> waiting;
  for (int i = 0; i < 3; ++i) {
    waiting.push_back(std::async(std::launch::async, [&] { return client->Reset(); }));
  }
  for (int i = 0; i < 3; ++i) peer.Expect(Command::kDeviceReset);
  peer.Close();
  for (auto& call : waiting) {
    auto result = call.get();
    ASSERT_FALSE(result.has_value());
    EXPECT_EQ(result.error().code, ECONNRESET);
  }
  EXPECT_FALSE(client->connected());
  EXPECT_EQ(client->Reset().error().code, ECONNRESET);
}

TEST(ClientConcurrencyTest, CloseWakesWaitersWithEnotconn) {
  ScriptedPeer peer;
  auto client = Connected(peer);
  auto reset = std::async(std::launch::async, [&] { return client->Reset(); });
  peer.Expect(Command::kDeviceReset);
  client->Close();
  auto result = reset.get();
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code, ENOTCONN);
  EXPECT_EQ(client->GetDeviceInfo().error().code, ENOTCONN);
  client->Close();  // Idempotent.
}

}  // namespace
}  // namespace umdev::vfio_user
