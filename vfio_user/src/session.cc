// Session: reading, dispatch, replies, teardown, and message DMA to the client.
#include "session.h"

#include <poll.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include <algorithm>

namespace umdev::vfio_user {
namespace {

// The largest message we accept: a REGION_WRITE of max_data_xfer_size bytes
// and its fixed part, with room for the largest fixed part of any command.
size_t MaxMessageSize(const SessionLimits& limits) {
  return kHeaderSize + 64 + limits.max_data_xfer_size;
}

bool TakesFds(uint16_t command) {
  return command == static_cast<uint16_t>(Command::kDmaMap) ||
         command == static_cast<uint16_t>(Command::kDeviceSetIrqs);
}

}  // namespace

Session::Session(std::string name, UniqueFd socket, OpenedDevice device, EventLoop& loop,
                 SessionLimits limits)
    : name_(std::move(name)),
      socket_(std::move(socket)),
      file_(std::move(device.file)),
      iommu_(std::move(device.iommu)),
      holder_(std::move(device.holder)),
      loop_(loop),
      limits_(limits),
      reader_(MaxMessageSize(limits), limits.max_msg_fds) {
  iommu_->SetMessageChannel(this);
}

Session::~Session() {
  {
    MutexLock lock(mu_);
    closed_ = true;
    replied_.NotifyAll();
  }
  file_.reset();
  iommu_->SetMessageChannel(nullptr);
  auto unmapped = iommu_->UnmapAll();
  holder_.reset();
  spdlog::info("vfio-user: {}: client gone; unmapped {} bytes of DMA", name_,
               unmapped.has_value() ? *unmapped : 0);
}

bool Session::OnReadable() {
  for (;;) {
    auto next = NextCommand();
    if (!next.has_value()) {
      if (next.error().code != ECONNRESET) {
        spdlog::warn("vfio-user: {}: dropping the client: {}", name_, next.error().Describe());
      }
      return false;
    }
    if (!next->has_value()) return true;
    Dispatch(**next);
    if (send_failed_ || abandoned_) return false;
    // Nothing queued or half read: back to the (level-triggered) poll, which
    // says whether more came, rather than a read that finds nothing.
    if (deferred_.empty() && reader_.buffered_bytes() == 0) return true;
  }
}

Result<std::optional<Message>> Session::NextCommand() {
  if (!deferred_.empty()) {
    Message message = std::move(deferred_.front());
    deferred_.pop_front();
    deferred_bytes_ -= message.payload.size();
    return std::optional<Message>(std::move(message));
  }
  for (;;) {
    UMDEV_ASSIGN_OR_RETURN(std::optional<Message> message, reader_.ReadSome(socket_.get()));
    if (!message || !message->is_reply()) return message;
    RouteReply(std::move(*message));
  }
}

void Session::RouteReply(Message reply) {
  MutexLock lock(mu_);
  auto it = pending_.find(reply.header.msg_id);
  if (it == pending_.end() || it->second.has_value()) {
    // Not ours to wait for (a late reply after a timeout, or a confused
    // client): nothing can be answered to a reply, so it is dropped.
    spdlog::warn("vfio-user: {}: dropped an unexpected {} reply (id {})", name_,
                 CommandName(reply.header.command), reply.header.msg_id);
    return;
  }
  it->second = std::move(reply);
  replied_.NotifyAll();
}

void Session::Dispatch(Message& message) {
  const Header& header = message.header;
  if (spdlog::should_log(spdlog::level::trace)) {
    spdlog::trace("vfio-user: {}: {} id {} size {} flags {:#x} fds {}", name_,
                  CommandName(header.command), header.msg_id, header.msg_size, header.flags,
                  message.fds.size());
  }
  Result<Reply> reply = Handle(message);
  // Fds the handler did not keep are closed before the client hears back.
  message.fds.clear();
  if (!reply.has_value()) {
    // The reply carries only an errno: the first failure of each command in
    // a session is logged where an operator sees it (why a DMA_MAP was
    // refused, say), the rest at debug so that a client cannot flood the log.
    const bool first = header.command < warned_.size() && !warned_.test(header.command);
    if (first) warned_.set(header.command);
    spdlog::log(first ? spdlog::level::warn : spdlog::level::debug, "vfio-user: {}: {} failed: {}{}",
                name_, CommandName(header.command), reply.error().Describe(),
                first ? " (more failures of it in this session at debug level)" : "");
  }
  if (message.wants_reply()) {
    SendReply(header, reply);
  } else if (!reply.has_value()) {
    // A posted command's failure has no reply to carry it (spec: NO_REPLY).
    spdlog::warn("vfio-user: {}: posted {} failed: {}", name_, CommandName(header.command),
                 reply.error().Describe());
  }
}

Result<Reply> Session::Handle(Message& message) {
  const uint16_t command = message.header.command;
  if (message.type() != kTypeCommand) {
    return Fail(EINVAL, fmt::format("message type {} is not a command", message.type()));
  }
  if (message.oversized) {
    return Fail(E2BIG, fmt::format("{} of {} bytes is over the limit", CommandName(command),
                                   message.header.msg_size));
  }
  if (message.fds_truncated) return Fail(EINVAL, "more fds than max_msg_fds");
  if (!message.fds.empty() && !TakesFds(command)) {
    return Fail(EINVAL, CommandName(command) + " takes no fds");
  }
  if (command == static_cast<uint16_t>(Command::kVersion)) return HandleVersion(message);
  if (!negotiated_) return Fail(EINVAL, CommandName(command) + " before VERSION");
  switch (static_cast<Command>(command)) {
    case Command::kDmaMap: return HandleDmaMap(message);
    case Command::kDmaUnmap: return HandleDmaUnmap(message);
    case Command::kDeviceGetInfo: return HandleGetInfo(message);
    case Command::kDeviceGetRegionInfo: return HandleGetRegionInfo(message);
    case Command::kDeviceGetRegionIoFds: return HandleGetRegionIoFds(message);
    case Command::kDeviceGetIrqInfo: return HandleGetIrqInfo(message);
    case Command::kDeviceSetIrqs: return HandleSetIrqs(message);
    case Command::kRegionRead: return HandleRegionRead(message);
    case Command::kRegionWrite: return HandleRegionWrite(message);
    case Command::kRegionWriteMulti: return HandleRegionWriteMulti(message);
    case Command::kDeviceFeature: return HandleDeviceFeature(message);
    case Command::kMigDataRead: return HandleMigDataRead(message);
    case Command::kMigDataWrite: return HandleMigDataWrite(message);
    case Command::kDeviceReset: {
      spdlog::info("vfio-user: {}: DEVICE_RESET", name_);
      UMDEV_TRY(file_->Reset());
      return Reply{};
    }
    case Command::kDmaRead:
    case Command::kDmaWrite:
      return Fail(EINVAL, CommandName(command) + " goes from server to client");
    case Command::kVersion:
      break;
  }
  // libvfio-user answers an unknown command with EINVAL; so do we.
  return Fail(EINVAL, "unknown command " + CommandName(command));
}

void Session::SendReply(const Header& request, const Result<Reply>& reply) {
  Header header{};
  header.msg_id = request.msg_id;
  header.command = request.command;
  header.flags = kTypeReply;
  Result<void> sent;
  if (reply.has_value()) {
    sent = Send(header, reply->payload, reply->fd);
  } else {
    // An error reply is the header alone (spec 0.9.2).
    header.flags |= kFlagError;
    header.error_no = static_cast<uint32_t>(reply.error().code);
    sent = Send(header, {});
  }
  if (!sent.has_value()) {
    // A client that does not take its replies (send timeout) or is gone.
    spdlog::warn("vfio-user: {}: reply to {} not sent, dropping the client: {}", name_,
                 CommandName(request.command), sent.error().Describe());
    send_failed_ = true;
  }
}

Result<void> Session::Send(const Header& header, std::span<const std::byte> payload, int fd) {
  MutexLock lock(send_mu_);
  if (fd >= 0) {
    const int fds[1] = {fd};
    return SendMessage(socket_.get(), header, payload, fds);
  }
  return SendMessage(socket_.get(), header, payload);
}

Result<Message> Session::Request(Command command, std::span<const std::byte> payload) {
  Header header{};
  header.command = static_cast<uint16_t>(command);
  header.flags = kTypeCommand;
  {
    MutexLock lock(mu_);
    if (closed_) return Fail(ECONNRESET, "client disconnected");
    // Skip ids still waited for (16 bits wrap).
    do {
      header.msg_id = next_request_id_++;
    } while (pending_.contains(header.msg_id));
    pending_.emplace(header.msg_id, std::nullopt);
  }
  const uint16_t id = header.msg_id;
  auto forget = [&] {
    MutexLock lock(mu_);
    pending_.erase(id);
  };
  if (auto sent = Send(header, payload); !sent.has_value()) {
    forget();
    return std::unexpected(Wrap(sent.error(), "send " + CommandName(header.command)));
  }
  const auto deadline = std::chrono::steady_clock::now() + limits_.message_timeout;
  const bool pump = loop_.OnLoopThread();
  for (;;) {
    {
      MutexLock lock(mu_);
      auto it = pending_.find(id);
      if (it->second.has_value()) {
        Message reply = std::move(*it->second);
        pending_.erase(it);
        return reply;
      }
      if (closed_) {
        pending_.erase(it);
        return Fail(ECONNRESET, "client disconnected");
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) {
        pending_.erase(it);
        break;
      }
      if (!pump) {
        replied_.WaitFor(mu_, deadline - now);
        continue;
      }
    }
    // We are the thread that reads this socket: read it here, keeping the
    // client's commands for after the one being served.
    // Waits only when no whole message is buffered already (a read may
    // have brought several).
    pollfd p{socket_.get(), POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!reader_.has_message()) {
      (void)::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    }
    for (;;) {
      auto next = reader_.ReadSome(socket_.get());
      if (!next.has_value()) {
        forget();
        return std::unexpected(Wrap(next.error(), "waiting for the client"));
      }
      if (!next->has_value()) break;
      if ((*next)->is_reply()) {
        RouteReply(std::move(**next));
        continue;
      }
      if (deferred_.size() >= kMaxDeferred ||
          (*next)->payload.size() > kMaxDeferredBytes - deferred_bytes_) {
        forget();
        Abandon("it queued too many commands while owing a DMA reply");
        return Fail(ENOBUFS, fmt::format("{}: the client queued over {} commands ({} bytes) "
                                         "while owing a reply",
                                         CommandName(header.command), kMaxDeferred,
                                         deferred_bytes_));
      }
      deferred_bytes_ += (*next)->payload.size();
      deferred_.push_back(std::move(**next));
    }
  }
  // timed_out: a client that does not answer within the timeout is broken or
  // hostile; no later DMA waits for it again.
  Abandon(fmt::format("no reply to {} in {} ms", CommandName(header.command),
                      limits_.message_timeout.count()));
  return Fail(ETIMEDOUT, CommandName(header.command) + ": no reply from the client");
}

void Session::Abandon(const std::string& why) {
  {
    MutexLock lock(mu_);
    closed_ = true;
    replied_.NotifyAll();
  }
  abandoned_ = true;
  spdlog::warn("vfio-user: {}: dropping the client: {}", name_, why);
  // The session thread drops the client after the command it is serving is
  // answered; any other thread wakes it with an end of input.
  if (!loop_.OnLoopThread()) ::shutdown(socket_.get(), SHUT_RD);
}

Result<void> Session::DmaRead(uint64_t iova, std::span<std::byte> out) {
  while (!out.empty()) {
    // The reply carries |count| bytes to us: bounded by our limit too, or
    // it would arrive oversized and be dropped.
    const uint64_t count =
        std::min<uint64_t>({out.size(), peer_max_xfer_, limits_.max_data_xfer_size});
    const DmaAccessPayload request{iova, count};
    UMDEV_ASSIGN_OR_RETURN(Message reply,
                           Request(Command::kDmaRead, std::as_bytes(std::span(&request, 1))));
    if ((reply.header.flags & kFlagError) != 0) {
      const int code = reply.header.error_no != 0 ? static_cast<int>(reply.header.error_no) : EIO;
      return Fail(code, fmt::format("DMA_READ {:#x}+{:#x}: the client refused", iova, count));
    }
    auto echo = LoadPayload<DmaAccessPayload>(reply.payload);
    if (!echo || echo->address != iova || echo->count != count ||
        reply.payload.size() != sizeof(DmaAccessPayload) + count) {
      return Fail(EIO, fmt::format("DMA_READ {:#x}+{:#x}: malformed reply", iova, count));
    }
    std::copy_n(reply.payload.begin() + sizeof(DmaAccessPayload), count, out.begin());
    out = out.subspan(count);
    iova += count;
  }
  return {};
}

Result<void> Session::DmaWrite(uint64_t iova, std::span<const std::byte> data) {
  while (!data.empty()) {
    const uint64_t count = std::min<uint64_t>(data.size(), peer_max_xfer_);
    std::vector<std::byte> request;
    request.reserve(sizeof(DmaAccessPayload) + count);
    AppendPod(request, DmaAccessPayload{iova, count});
    AppendBytes(request, data.first(count));
    UMDEV_ASSIGN_OR_RETURN(Message reply, Request(Command::kDmaWrite, request));
    if ((reply.header.flags & kFlagError) != 0) {
      const int code = reply.header.error_no != 0 ? static_cast<int>(reply.header.error_no) : EIO;
      return Fail(code, fmt::format("DMA_WRITE {:#x}+{:#x}: the client refused", iova, count));
    }
    // The spec's reply echoes {address, count}; a header-only reply (older
    // QEMU source) is accepted as success too.
    if (!reply.payload.empty()) {
      auto echo = LoadPayload<DmaAccessPayload>(reply.payload);
      if (!echo || echo->address != iova || echo->count != count) {
        return Fail(EIO, fmt::format("DMA_WRITE {:#x}+{:#x}: malformed reply", iova, count));
      }
    }
    data = data.subspan(count);
    iova += count;
  }
  return {};
}

}  // namespace umdev::vfio_user
