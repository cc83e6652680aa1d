// Framing vfio-user messages on a UNIX stream socket: one message at a time,
// with the SCM_RIGHTS fds that arrived with it.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"
#include "umdev/vfio_user/protocol.h"

namespace umdev::vfio_user {

struct Message {
  Header header;
  std::vector<std::byte> payload;  // msg_size - 16 bytes.
  std::vector<UniqueFd> fds;
  // More fds came than the reader takes; the kernel closed the excess.
  bool fds_truncated = false;
  // msg_size was over the reader's limit: the payload was read and dropped,
  // so the stream stays framed and the sender can be told E2BIG.
  bool oversized = false;

  uint32_t type() const { return header.flags & kFlagTypeMask; }
  bool is_reply() const { return type() == kTypeReply; }
  bool wants_reply() const { return (header.flags & kFlagNoReply) == 0; }
};

// Reassembles messages from a non-blocking read side. Reads never run past
// the end of the current message, so the fds a read returns belong to it.
// One thread at a time.
class MessageReader {
 public:
  // |max_message_size| includes the header.
  MessageReader(size_t max_message_size, size_t max_fds)
      : max_message_size_(max_message_size), max_fds_(max_fds) {}

  // Reads what |fd| has without blocking. Returns a whole message, or nullopt
  // when more bytes are needed. Errors: ECONNRESET the peer closed (also
  // mid-message); EPROTO a header whose msg_size is under 16 (the stream
  // cannot be framed any more); recvmsg's errno.
  Result<std::optional<Message>> ReadSome(int fd);

  // Whether part of a message has been read.
  bool mid_message() const { return state_ != State::kHeader || have_ != 0; }

 private:
  enum class State { kHeader, kPayload, kDiscard };
  Result<size_t> Receive(int fd, std::byte* to, size_t size);

  const size_t max_message_size_;
  const size_t max_fds_;
  State state_ = State::kHeader;
  size_t have_ = 0;  // Bytes of the current part read so far.
  std::byte header_bytes_[kHeaderSize] = {};
  Message current_;
};

// Sends every byte of |iov| in order, with |fds| on the first byte
// (SCM_RIGHTS), resuming short sends. |flags| is added to MSG_NOSIGNAL
// (MSG_DONTWAIT: EAGAIN rather than waiting). For framing of one's own, as
// tests that send malformed frames do. Errors: EINVAL more than 253 fds;
// sendmsg's errno.
Result<void> SendWithFds(int fd, std::span<iovec> iov, std::span<const int> fds = {},
                         int flags = 0);

// Sends one message; |header.msg_size| is set here. Blocks on a full socket
// (bounded by the socket's SO_SNDTIMEO). Errors: sendmsg's errno (EPIPE,
// ECONNRESET when the peer is gone; EAGAIN on a send timeout).
Result<void> SendMessage(int fd, Header header, std::span<const std::byte> payload,
                         std::span<const int> fds = {});

// Waits up to |timeout| for one whole message, for clients. Errors: ETIMEDOUT;
// those of ReadSome.
Result<Message> ReceiveMessage(int fd, MessageReader& reader, std::chrono::milliseconds timeout);

}  // namespace umdev::vfio_user
