// ScriptedPeer: the server end of a socketpair, driven step by step by a
// client test with the codec: receive a command, check it, answer it.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "umdev/common/unique_fd.h"
#include "umdev/vfio_user/client.h"
#include "umdev/vfio_user/message.h"
#include "umdev/vfio_user/protocol.h"

namespace umdev::vfio_user::testing {

template <typename... T>
std::vector<std::byte> Pod(const T&... parts) {
  std::vector<std::byte> out;
  (AppendPod(out, parts), ...);
  return out;
}

inline std::vector<std::byte> VersionReply(std::string json, uint16_t major = 0,
                                           uint16_t minor = 0, bool nul = true) {
  std::vector<std::byte> out = Pod(VersionPayload{major, minor});
  if (nul) json.push_back('\0');
  AppendBytes(out, std::as_bytes(std::span(json)));
  return out;
}

// One thread at a time (the test's).
class ScriptedPeer {
 public:
  ScriptedPeer() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    client_end_.Reset(fds[0]);
    server_end_.Reset(fds[1]);
  }

  UniqueFd TakeClientEnd() { return std::move(client_end_); }
  int fd() const { return server_end_.get(); }
  void Close() { server_end_.Reset(); }

  Result<Message> Receive(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return ReceiveMessage(server_end_.get(), reader_, timeout);
  }

  // Receives a command, expecting |command|.
  Message Expect(Command command) {
    auto message = Receive();
    EXPECT_TRUE(message.has_value()) << message.error().Describe();
    if (!message.has_value()) return Message{};
    EXPECT_EQ(message->header.command, static_cast<uint16_t>(command));
    return std::move(*message);
  }

  void Reply(const Message& request, std::span<const std::byte> payload,
             std::span<const int> fds = {}) {
    Header header{};
    header.msg_id = request.header.msg_id;
    header.command = request.header.command;
    header.flags = kTypeReply;
    auto sent = SendMessage(server_end_.get(), header, payload, fds);
    EXPECT_TRUE(sent.has_value()) << sent.error().Describe();
  }

  void ReplyError(const Message& request, uint32_t error_no) {
    Header header{};
    header.msg_id = request.header.msg_id;
    header.command = request.header.command;
    header.flags = kTypeReply | kFlagError;
    header.error_no = error_no;
    auto sent = SendMessage(server_end_.get(), header, {});
    EXPECT_TRUE(sent.has_value()) << sent.error().Describe();
  }

  // A server-to-client command; returns its msg_id.
  uint16_t Request(Command command, std::span<const std::byte> payload,
                   std::span<const int> fds = {}, uint32_t flags = kTypeCommand) {
    Header header{};
    header.msg_id = next_id_++;
    header.command = static_cast<uint16_t>(command);
    header.flags = flags;
    auto sent = SendMessage(server_end_.get(), header, payload, fds);
    EXPECT_TRUE(sent.has_value()) << sent.error().Describe();
    return header.msg_id;
  }

  // Sends a server-to-client command and returns the client's reply.
  Message RequestAndWait(Command command, std::span<const std::byte> payload,
                         std::span<const int> fds = {}) {
    const uint16_t id = Request(command, payload, fds);
    auto reply = Receive();
    EXPECT_TRUE(reply.has_value()) << reply.error().Describe();
    if (!reply.has_value()) return Message{};
    EXPECT_TRUE(reply->is_reply());
    EXPECT_EQ(reply->header.msg_id, id);
    EXPECT_EQ(reply->header.command, static_cast<uint16_t>(command));
    return std::move(*reply);
  }

  static int ErrorOf(const Message& reply) {
    return (reply.header.flags & kFlagError) != 0 ? static_cast<int>(reply.header.error_no) : 0;
  }

 private:
  UniqueFd client_end_;
  UniqueFd server_end_;
  MessageReader reader_{(1u << 20) + 4096, 16};
  uint16_t next_id_ = 0x8000;
};

// A client adopted on |peer|'s socket, after VERSION answered with |json|.
inline std::unique_ptr<Client> Connected(ScriptedPeer& peer,
                                         std::string json = R"({"capabilities":{)"
                                                            R"("max_msg_fds":16,)"
                                                            R"("write_multiple":true}})",
                                         ClientOptions options = {}) {
  auto client = std::async(std::launch::async, [&peer, options] {
    return Client::Adopt(peer.TakeClientEnd(), options);
  });
  Message version = peer.Expect(Command::kVersion);
  peer.Reply(version, VersionReply(json));
  auto result = client.get();
  EXPECT_TRUE(result.has_value()) << result.error().Describe();
  return result.has_value() ? std::move(*result) : nullptr;
}

}  // namespace umdev::vfio_user::testing
