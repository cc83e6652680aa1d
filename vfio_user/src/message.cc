// MessageReader and SendMessage: vfio-user framing over SOCK_STREAM + SCM_RIGHTS.
#include "umdev/vfio_user/message.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace umdev::vfio_user {
namespace {

// Linux's SCM_MAX_FD: the most fds one message can carry. The receive buffer
// holds this many so that nothing is lost silently; the reader then decides.
constexpr size_t kScmMaxFd = 253;

}  // namespace

Result<void> MessageReader::Receive(int fd, bool wait) {
  // A large message reads the rest of its payload in place; otherwise up
  // to kLookahead bytes go to in_, after what is left there (at most one
  // message's start, moved to the front).
  std::byte* to = nullptr;
  size_t want = 0;
  const size_t old_end = end_;
  if (large_) {
    to = large_->payload.data() + large_have_;
    want = large_->payload.size() - large_have_;
  } else {
    if (begin_ != 0) {
      std::memmove(in_.data(), in_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (in_.size() < end_ + kLookahead) in_.resize(end_ + kLookahead);
    to = in_.data() + end_;
    want = kLookahead;
  }
  iovec iov{to, want};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kScmMaxFd)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, (wait ? 0 : MSG_DONTWAIT) | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return FailErrno("recvmsg");
  if (large_) {
    large_have_ += static_cast<size_t>(n);
  } else {
    end_ += static_cast<size_t>(n);
  }
  std::vector<UniqueFd> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.emplace_back(received);
    }
  }
  const bool truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  if (!fds.empty() || truncated) {
    // Inside a large message no other message starts: they are its own.
    const uint64_t chunk_begin = large_ ? offset_ : offset_ + (old_end - begin_);
    AttachFds(chunk_begin, large_ ? chunk_begin : chunk_begin + static_cast<uint64_t>(n),
              std::move(fds), truncated);
  }
  if (n == 0) return Fail(ECONNRESET, "peer closed the connection");
  return {};
}

void MessageReader::AttachFds(uint64_t chunk_begin, uint64_t chunk_end,
                              std::vector<UniqueFd> fds, bool truncated) {
  // Walk the message starts the buffer shows, from the message in progress
  // (or the one after the message being drained) on.
  uint64_t owner = discarding_ ? discard_start_ : large_ ? large_start_ : offset_;
  uint64_t start = discarding_ ? offset_ + discard_left_ : offset_;
  while (start < chunk_end) {
    if (start >= chunk_begin) owner = start;
    const uint64_t at = begin_ + (start - offset_);
    if (at + kHeaderSize > end_) break;
    uint32_t size = 0;
    std::memcpy(&size, in_.data() + at + offsetof(Header, msg_size), sizeof(size));
    if (size < kHeaderSize) break;  // Unframable: the stream ends at it.
    start += size;
  }
  PendingFds& pending = fds_[owner];
  pending.truncated |= truncated;
  for (UniqueFd& fd : fds) {
    if (pending.fds.size() < max_fds_) {
      pending.fds.push_back(std::move(fd));
    } else {
      pending.truncated = true;  // Closed here, as the old limit did.
    }
  }
}

bool MessageReader::has_message() const {
  if (large_) return large_have_ == large_->payload.size();
  if (discarding_) return buffered_bytes() >= discard_left_;
  if (buffered_bytes() < kHeaderSize) return false;
  uint32_t size = 0;
  std::memcpy(&size, in_.data() + begin_ + offsetof(Header, msg_size), sizeof(size));
  return size < kHeaderSize || buffered_bytes() >= size;
}

Result<std::optional<Message>> MessageReader::TakeBuffered() {
  const auto take_fds = [this](uint64_t start, Message& message) {
    if (auto it = fds_.find(start); it != fds_.end()) {
      message.fds = std::move(it->second.fds);
      message.fds_truncated = it->second.truncated;
    }
    // Anything left at or before this message's start is stale.
    fds_.erase(fds_.begin(), fds_.upper_bound(start));
  };
  if (discarding_) {
    const size_t drop = static_cast<size_t>(std::min<uint64_t>(discard_left_, buffered_bytes()));
    begin_ += drop;
    offset_ += drop;
    discard_left_ -= drop;
    if (discard_left_ != 0) return std::optional<Message>();
    Message done;
    done.header = *discarding_;
    done.oversized = true;
    take_fds(discard_start_, done);
    done.fds.clear();  // Refused unread: its fds are closed at once.
    discarding_.reset();
    return std::optional<Message>(std::move(done));
  }
  if (large_) {
    if (large_have_ < large_->payload.size()) return std::optional<Message>();
    Message done = std::move(*large_);
    large_.reset();
    offset_ = large_start_ + done.header.msg_size;
    take_fds(large_start_, done);
    return std::optional<Message>(std::move(done));
  }
  if (buffered_bytes() < kHeaderSize) return std::optional<Message>();
  Header header;
  std::memcpy(&header, in_.data() + begin_, kHeaderSize);
  const uint32_t size = header.msg_size;
  if (size < kHeaderSize) {
    return Fail(EPROTO, "message size " + std::to_string(size) + " is under the header's");
  }
  if (size > max_message_size_) {
    // Drained as it arrives, so that the stream stays framed and the sender
    // can be told E2BIG; never held in memory.
    discarding_ = header;
    discard_start_ = offset_;
    discard_left_ = size - kHeaderSize;
    begin_ += kHeaderSize;
    offset_ += kHeaderSize;
    return TakeBuffered();
  }
  if (buffered_bytes() < size) {
    if (size - kHeaderSize <= kLookahead) return std::optional<Message>();
    // Large: its payload is read in place from here on, not through in_.
    large_.emplace();
    large_->header = header;
    large_->payload.resize(size - kHeaderSize);
    large_start_ = offset_;
    large_have_ = buffered_bytes() - kHeaderSize;
    std::memcpy(large_->payload.data(), in_.data() + begin_ + kHeaderSize, large_have_);
    offset_ += buffered_bytes();
    begin_ = end_ = 0;
    return std::optional<Message>();
  }
  Message done;
  done.header = header;
  done.payload.assign(in_.begin() + static_cast<ptrdiff_t>(begin_ + kHeaderSize),
                      in_.begin() + static_cast<ptrdiff_t>(begin_ + size));
  take_fds(offset_, done);
  begin_ += size;
  offset_ += size;
  if (begin_ == end_) begin_ = end_ = 0;
  return std::optional<Message>(std::move(done));
}

Result<std::optional<Message>> MessageReader::ReadSome(int fd) {
  for (;;) {
    UMDEV_ASSIGN_OR_RETURN(std::optional<Message> message, TakeBuffered());
    if (message) return message;
    auto got = Receive(fd);
    if (!got) {
      if (got.error().code == EAGAIN) return std::optional<Message>();
      return std::unexpected(got.error());
    }
  }
}

Result<std::optional<Message>> MessageReader::ReadWaiting(int fd, std::chrono::milliseconds wait) {
  UMDEV_ASSIGN_OR_RETURN(std::optional<Message> buffered, TakeBuffered());
  if (buffered) return buffered;
  if (wait.count() <= 0) return Fail(ETIMEDOUT, "no message in time");
  if (fd != waiting_fd_) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0) return FailErrno("fcntl F_GETFL");
    waiting_fd_ = fd;
    waiting_fd_blocks_ = (flags & O_NONBLOCK) == 0;
    receive_timeout_ = std::chrono::milliseconds(-1);
  }
  if (!waiting_fd_blocks_) {
    pollfd p{fd, POLLIN, 0};
    int ready;
    do {
      ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(wait.count(), INT32_MAX)));
    } while (ready < 0 && errno == EINTR);
    if (ready < 0) return FailErrno("poll");
    if (ready == 0) return Fail(ETIMEDOUT, "no message in time");
    return ReadSome(fd);
  }
  if (wait != receive_timeout_) {
    const timeval limit{.tv_sec = static_cast<time_t>(wait.count() / 1000),
                        .tv_usec = static_cast<suseconds_t>(wait.count() % 1000 * 1000)};
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit)) != 0) {
      return FailErrno("setsockopt SO_RCVTIMEO");
    }
    receive_timeout_ = wait;
  }
  auto got = Receive(fd, true);
  if (!got) {
    if (got.error().code == EAGAIN) return Fail(ETIMEDOUT, "no message in time");
    return std::unexpected(got.error());
  }
  return TakeBuffered();
}

Result<void> SendWithFds(int fd, std::span<iovec> iov, std::span<const int> fds, int flags) {
  if (fds.size() > kScmMaxFd) return Fail(EINVAL, "send: too many fds for one message");
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kScmMaxFd)];
  msghdr msg{};
  msg.msg_iov = iov.data();
  msg.msg_iovlen = iov.size();
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  size_t left = 0;
  for (const iovec& part : iov) left += part.iov_len;
  while (left > 0) {
    const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("sendmsg");
    }
    left -= static_cast<size_t>(n);
    // The fds went with the first bytes; advance the iovecs past what was sent.
    msg.msg_control = nullptr;
    msg.msg_controllen = 0;
    for (size_t sent = static_cast<size_t>(n); sent > 0 && msg.msg_iovlen > 0;) {
      iovec& first = msg.msg_iov[0];
      const size_t step = std::min(sent, first.iov_len);
      first.iov_base = static_cast<char*>(first.iov_base) + step;
      first.iov_len -= step;
      sent -= step;
      if (first.iov_len == 0) {
        ++msg.msg_iov;
        --msg.msg_iovlen;
      }
    }
  }
  return {};
}

Result<void> SendMessage(int fd, Header header, std::span<const std::byte> payload,
                         std::span<const int> fds) {
  header.msg_size = static_cast<uint32_t>(kHeaderSize + payload.size());
  iovec iov[2] = {{&header, kHeaderSize},
                  {const_cast<std::byte*>(payload.data()), payload.size()}};
  return SendWithFds(fd, std::span(iov, payload.empty() ? 1 : 2), fds);
}

Result<Message> ReceiveMessage(int fd, MessageReader& reader, std::chrono::milliseconds timeout) {
  // A message already buffered first; then a read that waits (a reply is
  // rarely there the moment its request has gone): on a blocking socket,
  // one system call per message, as a plain blocking read.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (std::chrono::milliseconds left = timeout;;) {
    UMDEV_ASSIGN_OR_RETURN(std::optional<Message> message, reader.ReadWaiting(fd, left));
    if (message) return std::move(*message);
    // Part of a message came: wait for the rest within what is left.
    left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
  }
}

}  // namespace umdev::vfio_user
