// The vfio-user wire format: capability JSON and message framing over a real socketpair.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "umdev/vfio_user/message.h"
#include "umdev/vfio_user/protocol.h"

namespace umdev::vfio_user {
namespace {

std::vector<std::byte> Bytes(std::string_view text, bool nul = true) {
  std::vector<std::byte> out(text.size() + (nul ? 1 : 0));
  std::memcpy(out.data(), text.data(), text.size());
  return out;
}

TEST(CapabilitiesTest, QemusOfferParsesAndToleratesLegacyMigration) {
  auto caps = ParseCapabilities(Bytes(
      R"({"capabilities":{"migration":{"pgsize":4096,"max_bitmap_size":268435456},)"
      R"("max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,)"
      R"("max_dma_maps":65535,"write_multiple":true,"future_key":[1,2]}})"));
  ASSERT_TRUE(caps.has_value()) << caps.error().Describe();
  EXPECT_EQ(caps->max_msg_fds, 16u);
  EXPECT_EQ(caps->max_data_xfer_size, 1048576u);
  EXPECT_EQ(caps->pgsizes, 4096u);
  EXPECT_EQ(caps->max_dma_maps, 65535u);
  EXPECT_TRUE(caps->write_multiple);
  EXPECT_FALSE(caps->twin_socket);
}

TEST(CapabilitiesTest, AbsentKeysTakeTheSpecDefaults) {
  auto caps = ParseCapabilities(Bytes("{}"));
  ASSERT_TRUE(caps.has_value());
  EXPECT_EQ(caps->max_msg_fds, 1u);
  EXPECT_EQ(caps->max_data_xfer_size, 1u << 20);
  EXPECT_FALSE(caps->write_multiple);
  EXPECT_TRUE(ParseCapabilities(Bytes("")).has_value());
}

TEST(CapabilitiesTest, MissingNulIsEinval) {
  auto caps = ParseCapabilities(Bytes("{}", false));
  ASSERT_FALSE(caps.has_value());
  EXPECT_EQ(caps.error().code, EINVAL);
  EXPECT_FALSE(ParseCapabilities({}).has_value());
}

TEST(CapabilitiesTest, MalformedJsonAndWrongTypesAreEinval) {
  for (const char* text : {"{", "[1]", R"({"capabilities":5})",
                           R"({"capabilities":{"max_msg_fds":"16"}})",
                           R"({"capabilities":{"max_msg_fds":-1}})",
                           R"({"capabilities":{"max_msg_fds":4294967296}})",
                           R"({"capabilities":{"write_multiple":1}})",
                           R"({"capabilities":{"twin_socket":true}})",
                           R"({"capabilities":{"twin_socket":{"supported":1}}})"}) {
    auto caps = ParseCapabilities(Bytes(text));
    ASSERT_FALSE(caps.has_value()) << text;
    EXPECT_EQ(caps.error().code, EINVAL) << text;
  }
}

TEST(CapabilitiesTest, FormattedReplyRoundTripsAndEndsInNul) {
  Capabilities caps;
  caps.max_msg_fds = 16;
  caps.max_dma_maps = 1000;
  const std::string text = FormatCapabilities(caps);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\0');
  EXPECT_EQ(text.find("write_multiple"), std::string::npos);
  EXPECT_EQ(text.find("twin_socket"), std::string::npos);
  auto back = ParseCapabilities(std::as_bytes(std::span(text)));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->max_msg_fds, 16u);
  EXPECT_EQ(back->max_dma_maps, 1000u);
  caps.write_multiple = true;
  EXPECT_NE(FormatCapabilities(caps).find("\"write_multiple\":true"), std::string::npos);
}

TEST(CommandNameTest, NamesKnownAndUnknownCommands) {
  EXPECT_EQ(CommandName(1), "VERSION");
  EXPECT_EQ(CommandName(15), "REGION_WRITE_MULTI");
  EXPECT_EQ(CommandName(14), "UNKNOWN(14)");
  EXPECT_EQ(CommandName(999), "UNKNOWN(999)");
}

class FramingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    a_ = UniqueFd(fds[0]);
    b_ = UniqueFd(fds[1]);
  }
  void Raw(const void* data, size_t size) {
    ASSERT_EQ(::send(a_.get(), data, size, 0), static_cast<ssize_t>(size));
  }
  static Header Hdr(uint16_t id, Command command, uint32_t size, uint32_t flags = 0) {
    return Header{id, static_cast<uint16_t>(command), size, flags, 0};
  }
  UniqueFd a_, b_;
};

TEST_F(FramingTest, WholeMessageWithPayloadArrives) {
  const std::vector<std::byte> payload(100, std::byte{0x5a});
  ASSERT_TRUE(SendMessage(a_.get(), Hdr(7, Command::kRegionWrite, 0, kFlagNoReply), payload));
  MessageReader reader(4096, 4);
  auto message = ReceiveMessage(b_.get(), reader, std::chrono::seconds(5));
  ASSERT_TRUE(message.has_value()) << message.error().Describe();
  EXPECT_EQ(message->header.msg_id, 7);
  EXPECT_EQ(message->header.command, 10);
  EXPECT_EQ(message->header.msg_size, 116u);
  EXPECT_FALSE(message->wants_reply());
  EXPECT_EQ(message->payload, payload);
  EXPECT_TRUE(message->fds.empty());
}

TEST_F(FramingTest, MessageSplitAcrossWritesIsReassembled) {
  Header header = Hdr(1, Command::kDeviceGetInfo, 32);
  std::byte payload[16] = {std::byte{1}, std::byte{2}};
  MessageReader reader(4096, 4);
  Raw(&header, 5);
  auto none = reader.ReadSome(b_.get());
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->has_value());
  EXPECT_TRUE(reader.mid_message());
  Raw(reinterpret_cast<char*>(&header) + 5, 11);
  Raw(payload, 3);
  none = reader.ReadSome(b_.get());
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->has_value());
  Raw(payload + 3, 13);
  auto message = reader.ReadSome(b_.get());
  ASSERT_TRUE(message.has_value() && message->has_value());
  EXPECT_EQ((*message)->payload[1], std::byte{2});
  EXPECT_FALSE(reader.mid_message());
}

TEST_F(FramingTest, BackToBackMessagesAreNotMerged) {
  const std::vector<std::byte> one(8, std::byte{1}), two(24, std::byte{2});
  ASSERT_TRUE(SendMessage(a_.get(), Hdr(1, Command::kRegionRead, 0), one));
  ASSERT_TRUE(SendMessage(a_.get(), Hdr(2, Command::kRegionRead, 0), two));
  MessageReader reader(4096, 4);
  auto first = ReceiveMessage(b_.get(), reader, std::chrono::seconds(5));
  auto second = ReceiveMessage(b_.get(), reader, std::chrono::seconds(5));
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->payload, one);
  EXPECT_EQ(second->payload, two);
  EXPECT_EQ(second->header.msg_id, 2);
}

TEST_F(FramingTest, FdsBelongToTheMessageTheyCameWith) {
  UniqueFd e1(::eventfd(0, EFD_CLOEXEC)), e2(::eventfd(0, EFD_CLOEXEC));
  const int fds[] = {e1.get(), e2.get()};
  const std::vector<std::byte> payload(20);
  ASSERT_TRUE(SendMessage(a_.get(), Hdr(1, Command::kDeviceGetInfo, 0), payload));
  ASSERT_TRUE(SendMessage(a_.get(), Hdr(2, Command::kDeviceSetIrqs, 0), payload, fds));
  MessageReader reader(4096, 4);
  auto first = ReceiveMessage(b_.get(), reader, std::chrono::seconds(5));
  auto second = ReceiveMessage(b_.get(), reader, std::chrono::seconds(5));
  ASSERT_TRUE(first && second);
  EXPECT_TRUE(first->fds.empty());
  ASSERT_EQ(second->fds.size(), 2u);
  EXPECT_FALSE(second->fds_truncated);
  // The received fd is the same eventfd: a write on it is seen on ours.
  const uint64_t one = 1;
  ASSERT_EQ(::write(second->fds[0].get(), &one, 8), 8);
  uint64_t value = 0;
  ASSERT_EQ(::read(e1.get(), &value, 8), 8);
  EXPECT_EQ(value, 1u);
}

TEST_F(FramingTest, FdsOverTheLimitAreClosedAndFlagged) {
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (int i = 0; i < 5; ++i) {
    owned.emplace_back(::eventfd(0, EFD_CLOEXEC));
    fds.push_back(owned.back().get());
  }
  ASSERT_TRUE(SendMessage(a_.get(), Hdr(1, Command::kDeviceSetIrqs, 0), std::vector<std::byte>(20),
                          fds));
  MessageReader reader(4096, 2);
  auto message = ReceiveMessage(b_.get(), reader, std::chrono::seconds(5));
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(message->fds.size(), 2u);
  EXPECT_TRUE(message->fds_truncated);
}

TEST_F(FramingTest, OversizedMessageIsDrainedAndTheStreamStaysFramed) {
  const std::vector<std::byte> big(10000, std::byte{9}), small(4, std::byte{4});
  ASSERT_TRUE(SendMessage(a_.get(), Hdr(1, Command::kRegionWrite, 0), big));
  ASSERT_TRUE(SendMessage(a_.get(), Hdr(2, Command::kRegionWrite, 0), small));
  MessageReader reader(1024, 1);
  auto first = ReceiveMessage(b_.get(), reader, std::chrono::seconds(5));
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(first->oversized);
  EXPECT_TRUE(first->payload.empty());
  EXPECT_EQ(first->header.msg_id, 1);
  auto second = ReceiveMessage(b_.get(), reader, std::chrono::seconds(5));
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(second->oversized);
  EXPECT_EQ(second->payload, small);
}

TEST_F(FramingTest, SizeUnderTheHeaderIsEproto) {
  Header header = Hdr(1, Command::kVersion, 15);
  Raw(&header, sizeof(header));
  MessageReader reader(4096, 1);
  auto message = ReceiveMessage(b_.get(), reader, std::chrono::seconds(5));
  ASSERT_FALSE(message.has_value());
  EXPECT_EQ(message.error().code, EPROTO);
}

TEST_F(FramingTest, PeerClosingMidMessageIsEconnreset) {
  Header header = Hdr(1, Command::kVersion, 64);
  Raw(&header, sizeof(header));
  Raw("abc", 3);
  a_.Reset();
  MessageReader reader(4096, 1);
  auto message = ReceiveMessage(b_.get(), reader, std::chrono::seconds(5));
  ASSERT_FALSE(message.has_value());
  EXPECT_EQ(message.error().code, ECONNRESET);
}

TEST_F(FramingTest, NothingArrivingTimesOut) {
  MessageReader reader(4096, 1);
  auto message = ReceiveMessage(b_.get(), reader, std::chrono::milliseconds(20));
  ASSERT_FALSE(message.has_value());
  EXPECT_EQ(message.error().code, ETIMEDOUT);
}

// ReceiveMessage waits in its read on a blocking socket and in poll on a
// non-blocking one: either way a message that comes in pieces, later, is
// put together, and nothing within the time is ETIMEDOUT.
TEST_F(FramingTest, AMessageArrivingLaterInPiecesIsWaitedForOnEitherKindOfSocket) {
  for (const bool nonblocking : {false, true}) {
    SCOPED_TRACE(nonblocking ? "non-blocking" : "blocking");
    if (nonblocking) {
      ASSERT_EQ(::fcntl(b_.get(), F_SETFL, ::fcntl(b_.get(), F_GETFL) | O_NONBLOCK), 0);
    }
    MessageReader reader(4096, 1);
    Header header = Hdr(9, Command::kDeviceGetInfo, 32);
    std::thread sender([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      Raw(&header, 10);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      Raw(reinterpret_cast<char*>(&header) + 10, 6);
      const std::byte payload[16] = {std::byte{7}};
      Raw(payload, sizeof(payload));
    });
    auto message = ReceiveMessage(b_.get(), reader, std::chrono::seconds(10));
    sender.join();
    ASSERT_TRUE(message.has_value()) << message.error().Describe();
    EXPECT_EQ(message->header.msg_id, 9);
    EXPECT_EQ(message->payload.size(), 16u);
    EXPECT_EQ(message->payload[0], std::byte{7});
    auto none = ReceiveMessage(b_.get(), reader, std::chrono::milliseconds(20));
    ASSERT_FALSE(none.has_value());
    EXPECT_EQ(none.error().code, ETIMEDOUT);
  }
}

TEST_F(FramingTest, LargeMessageLargerThanTheSocketBufferIsSentWhole) {
  const std::vector<std::byte> big((1 << 20) + 16, std::byte{3});
  std::thread sender([&] {
    EXPECT_TRUE(SendMessage(a_.get(), Hdr(1, Command::kRegionWrite, 0), big).has_value());
  });
  MessageReader reader(2 << 20, 1);
  auto message = ReceiveMessage(b_.get(), reader, std::chrono::seconds(30));
  sender.join();
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(message->payload, big);
}

TEST(LoadPayloadTest, ShortBufferIsNullopt) {
  std::vector<std::byte> bytes(15);
  EXPECT_FALSE(LoadPayload<RegionAccessPayload>(bytes).has_value());
  bytes.resize(16);
  EXPECT_TRUE(LoadPayload<RegionAccessPayload>(bytes).has_value());
  EXPECT_FALSE(LoadPayload<RegionAccessPayload>(bytes, 1).has_value());
  EXPECT_FALSE(LoadPayload<uint32_t>(bytes, 100).has_value());
}

}  // namespace
}  // namespace umdev::vfio_user
