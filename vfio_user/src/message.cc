// MessageReader and SendMessage: vfio-user framing over SOCK_STREAM + SCM_RIGHTS.
#include "umdev/vfio_user/message.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace umdev::vfio_user {
namespace {

// Linux's SCM_MAX_FD: the most fds one message can carry. The receive buffer
// holds this many so that nothing is lost silently; the reader then decides.
constexpr size_t kScmMaxFd = 253;

}  // namespace

Result<size_t> MessageReader::Receive(int fd, std::byte* to, size_t size) {
  iovec iov{to, size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kScmMaxFd)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return FailErrno("recvmsg");
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      UniqueFd owned(received);  // Closed at once if over the limit.
      if (current_.fds.size() < max_fds_) {
        current_.fds.push_back(std::move(owned));
      } else {
        current_.fds_truncated = true;
      }
    }
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0) current_.fds_truncated = true;
  if (n == 0) return Fail(ECONNRESET, "peer closed the connection");
  return static_cast<size_t>(n);
}

Result<std::optional<Message>> MessageReader::ReadSome(int fd) {
  for (;;) {
    if (state_ == State::kHeader) {
      auto got = Receive(fd, header_bytes_ + have_, kHeaderSize - have_);
      if (!got) {
        if (got.error().code == EAGAIN) return std::optional<Message>();
        return std::unexpected(got.error());
      }
      have_ += *got;
      if (have_ < kHeaderSize) continue;
      std::memcpy(&current_.header, header_bytes_, kHeaderSize);
      const uint32_t size = current_.header.msg_size;
      if (size < kHeaderSize) {
        return Fail(EPROTO, "message size " + std::to_string(size) + " is under the header's");
      }
      have_ = 0;
      if (size > max_message_size_) {
        current_.oversized = true;
        state_ = State::kDiscard;
      } else {
        current_.payload.resize(size - kHeaderSize);
        state_ = State::kPayload;
      }
    }
    const size_t want = current_.header.msg_size - kHeaderSize;
    if (have_ < want) {
      std::byte scratch[4096];
      std::byte* to = state_ == State::kDiscard ? scratch : current_.payload.data() + have_;
      const size_t chunk =
          state_ == State::kDiscard ? std::min(want - have_, sizeof(scratch)) : want - have_;
      auto got = Receive(fd, to, chunk);
      if (!got) {
        if (got.error().code == EAGAIN) return std::optional<Message>();
        return std::unexpected(got.error());
      }
      have_ += *got;
      if (have_ < want) continue;
    }
    Message done = std::move(current_);
    current_ = Message{};
    state_ = State::kHeader;
    have_ = 0;
    return std::optional<Message>(std::move(done));
  }
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
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    UMDEV_ASSIGN_OR_RETURN(std::optional<Message> message, reader.ReadSome(fd));
    if (message) return std::move(*message);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Fail(ETIMEDOUT, "no message in time");
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR) return FailErrno("poll");
  }
}

}  // namespace umdev::vfio_user
