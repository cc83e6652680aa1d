// Framing vfio-user messages on a UNIX stream socket: whole messages, each
// with the SCM_RIGHTS fds that arrived with it.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <map>
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

// Reassembles messages from a non-blocking read side. A read takes up to
// kLookahead bytes, so a small message (header and payload) costs one
// recvmsg, and several that were queued come together; a message larger
// than kLookahead has the rest of its payload read in place. The fds a recvmsg
// returns came with the last skb it read (the kernel stops after one that
// carries fds), which is where their message began: they go to the last
// message starting in that read, else to the message in progress. Memory
// is bounded by the largest message plus kLookahead. One thread at a time.
class MessageReader {
 public:
  static constexpr size_t kLookahead = 4096;

  // |max_message_size| includes the header.
  MessageReader(size_t max_message_size, size_t max_fds)
      : max_message_size_(max_message_size), max_fds_(max_fds) {}

  // A whole message already received, if any, then reads what |fd| has
  // without blocking. Returns a whole message, or nullopt when more bytes
  // are needed. Errors: ECONNRESET the peer closed (also mid-message);
  // EPROTO a header whose msg_size is under 16 (the stream cannot be framed
  // any more); recvmsg's errno.
  Result<std::optional<Message>> ReadSome(int fd);
  // As ReadSome, but one recvmsg that waits up to |wait| for data when |fd|
  // is a blocking socket (a client's), so that waiting and reading are one
  // system call. Sets |fd|'s SO_RCVTIMEO (only when |wait| changes). On a
  // non-blocking fd it polls first. Errors: ETIMEDOUT nothing within
  // |wait|; as ReadSome.
  Result<std::optional<Message>> ReadWaiting(int fd, std::chrono::milliseconds wait);
  // A whole message already received, without reading. Errors: EPROTO.
  Result<std::optional<Message>> TakeBuffered();

  // Whether a whole message (or a framing error) is buffered, so that
  // TakeBuffered() or ReadSome() returns without waiting: a caller that
  // polls the socket must not wait for more when this is true.
  bool has_message() const;
  // Whether part of a message has been read.
  bool mid_message() const {
    return buffered_bytes() != 0 || discarding_.has_value() || large_.has_value();
  }
  // Bytes received and not yet returned. A caller that stops reading when
  // this is 0 lets a level-triggered poll tell it of the rest, instead of
  // spending a recvmsg on EAGAIN.
  size_t buffered_bytes() const { return end_ - begin_; }

 private:
  // One recvmsg appended to in_; |wait| lets it block (a blocking fd).
  // Errors: EAGAIN nothing to read (or SO_RCVTIMEO ran out); as ReadSome.
  Result<void> Receive(int fd, bool wait = false);
  // Gives |fds| to the last message starting in [chunk_begin, chunk_end)
  // (stream offsets), else to the message in progress.
  void AttachFds(uint64_t chunk_begin, uint64_t chunk_end, std::vector<UniqueFd> fds,
                 bool truncated);

  struct PendingFds {
    std::vector<UniqueFd> fds;
    bool truncated = false;
  };

  const size_t max_message_size_;
  const size_t max_fds_;
  std::vector<std::byte> in_;  // [begin_, end_) received, not yet taken.
  size_t begin_ = 0;
  size_t end_ = 0;
  uint64_t offset_ = 0;  // The stream offset of in_[begin_].
  // An oversized message being drained: its header, where it began, and how
  // many of its bytes are still to drop.
  std::optional<Header> discarding_;
  uint64_t discard_start_ = 0;
  uint64_t discard_left_ = 0;
  // A message larger than kLookahead being read: its payload is read into
  // place; large_have_ bytes of it have come.
  std::optional<Message> large_;
  uint64_t large_start_ = 0;
  size_t large_have_ = 0;
  // ReadWaiting's knowledge of its fd: whether it blocks, and the receive
  // timeout last set on it.
  int waiting_fd_ = -1;
  bool waiting_fd_blocks_ = false;
  std::chrono::milliseconds receive_timeout_{-1};
  // Fds received, by the stream offset of the message they came with.
  std::map<uint64_t, PendingFds> fds_;
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
