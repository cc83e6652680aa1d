// RawPeer: a vfio-user client that sends exactly the bytes a test chooses and
// returns exactly what came back, for the server's protocol tests.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <string>
#include <vector>

#include "umdev/common/unique_fd.h"
#include "umdev/common/unix_address.h"
#include "umdev/vfio_user/message.h"
#include "umdev/vfio_user/protocol.h"

namespace umdev::vfio_user::testing {

class RawPeer {
 public:
  static Result<RawPeer> Connect(const std::string& path) {
    UMDEV_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path));
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return FailErrno("socket");
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return FailErrno("connect " + path);
    }
    return RawPeer(std::move(fd));
  }

  // Speaks for a connection made elsewhere (another process's, handed over).
  static RawPeer Adopt(UniqueFd fd) { return RawPeer(std::move(fd)); }

  // Sends a command; returns its msg_id.
  uint16_t Send(Command command, std::span<const std::byte> payload, std::span<const int> fds = {},
                uint32_t flags = kTypeCommand) {
    Header header{};
    header.msg_id = next_id_++;
    header.command = static_cast<uint16_t>(command);
    header.flags = flags;
    auto sent = SendMessage(fd_.get(), header, payload, fds);
    EXPECT_TRUE(sent.has_value()) << sent.error().Describe();
    return header.msg_id;
  }

  Result<Message> Receive(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return ReceiveMessage(fd_.get(), reader_, timeout);
  }

  // Sends a command and returns its reply (checking id and command).
  Message Call(Command command, std::span<const std::byte> payload, std::span<const int> fds = {}) {
    const uint16_t id = Send(command, payload, fds);
    auto reply = Receive();
    EXPECT_TRUE(reply.has_value()) << reply.error().Describe();
    if (!reply.has_value()) return Message{};
    EXPECT_EQ(reply->header.msg_id, id);
    EXPECT_EQ(reply->header.command, static_cast<uint16_t>(command));
    EXPECT_EQ(reply->header.flags & kFlagTypeMask, kTypeReply);
    return std::move(*reply);
  }

  // The errno of an error reply, or 0 for success.
  static int ErrorOf(const Message& reply) {
    return (reply.header.flags & kFlagError) != 0 ? static_cast<int>(reply.header.error_no) : 0;
  }

  Message Negotiate(std::string json = R"({"capabilities":{"max_msg_fds":16,)"
                                       R"("max_data_xfer_size":1048576,"pgsizes":4096,)"
                                       R"("max_dma_maps":65535,"write_multiple":true}})") {
    std::vector<std::byte> payload;
    AppendPod(payload, VersionPayload{0, 0});
    json.push_back('\0');
    AppendBytes(payload, std::as_bytes(std::span(json)));
    return Call(Command::kVersion, payload);
  }

  // True once the server has closed the connection (EOF within |timeout|).
  bool ClosedByServer(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto message = Receive(timeout);
    return !message.has_value() && message.error().code == ECONNRESET;
  }

  int fd() const { return fd_.get(); }

 private:
  explicit RawPeer(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
  MessageReader reader_{(1u << 20) + 4096, 16};
  uint16_t next_id_ = 1;
};

template <typename... T>
std::vector<std::byte> Payload(const T&... parts) {
  std::vector<std::byte> out;
  (AppendPod(out, parts), ...);
  return out;
}

}  // namespace umdev::vfio_user::testing
