// Client: the connection, the receive thread, request/reply matching, VERSION
// and the guest memory served through DMA_READ/DMA_WRITE.
#include "umdev/vfio_user/client.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstring>

#include "umdev/common/unix_address.h"

namespace umdev::vfio_user {
namespace {

// QEMU's limits on a server's VERSION reply (hw/vfio-user/proxy.c).
constexpr uint32_t kQemuMaxMsgFds = 16;
constexpr uint64_t kQemuMaxDataXfer = 64u << 20;

// The largest message we take: a DMA_WRITE of QEMU's largest transfer.
constexpr size_t kMaxIncoming = kHeaderSize + sizeof(DmaAccessPayload) + kQemuMaxDataXfer;

std::string OfferJson(const ClientOptions& options) {
  const Capabilities& caps = options.offer;
  nlohmann::json body = {
      {"max_msg_fds", caps.max_msg_fds},
      {"max_data_xfer_size", caps.max_data_xfer_size},
      {"pgsizes", caps.pgsizes},
      {"max_dma_maps", caps.max_dma_maps},
  };
  if (caps.write_multiple) body["write_multiple"] = true;
  if (options.offer_legacy_migration) {
    body["migration"] = {{"pgsize", 4096}, {"max_bitmap_size", 268435456}};
  }
  std::string text = nlohmann::json{{"capabilities", body}}.dump();
  text.push_back('\0');
  return text;
}

Result<void> SetSendTimeout(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
    return FailErrno("setsockopt SO_SNDTIMEO");
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<Client>> Client::Connect(const std::string& socket_path,
                                                ClientOptions options) {
  UMDEV_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(socket_path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return FailErrno("socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return FailErrno("connect " + socket_path);
  }
  return Adopt(std::move(fd), std::move(options));
}

Result<std::unique_ptr<Client>> Client::Adopt(UniqueFd socket, ClientOptions options) {
  UMDEV_TRY(SetSendTimeout(socket.get(), options.timeout));
  const bool negotiate = options.negotiate;
  std::unique_ptr<Client> client(new Client(std::move(socket), std::move(options)));
  client->Start();
  if (negotiate) UMDEV_TRY(client->Negotiate());
  return client;
}

Client::Client(UniqueFd socket, ClientOptions options)
    : options_(std::move(options)),
      socket_(std::move(socket)),
      timeout_ms_(options_.timeout.count()) {}

Client::~Client() { Close(); }

void Client::Start() { receiver_ = std::thread([this] { ReceiveLoop(); }); }

void Client::Close() {
  {
    MutexLock lock(mu_);
    if (closed_) return;
    closed_ = true;
  }
  // Wakes the receive thread's poll with EOF; it then fails every waiter.
  ::shutdown(socket_.get(), SHUT_RDWR);
  if (receiver_.joinable()) receiver_.join();
  FailAll(Error{ENOTCONN, "client closed"});
}

bool Client::connected() const {
  MutexLock lock(mu_);
  return !closed_ && !broken_.has_value();
}

Capabilities Client::server_caps() const {
  MutexLock lock(mu_);
  return server_caps_;
}

uint16_t Client::server_minor() const {
  MutexLock lock(mu_);
  return server_minor_;
}

void Client::FailAll(Error error) {
  MutexLock lock(mu_);
  if (!broken_.has_value()) {
    if (closed_) error = Error{ENOTCONN, "client closed"};
    broken_ = std::move(error);
  }
  replied_.NotifyAll();
}

void Client::ReceiveLoop() {
  MessageReader reader(kMaxIncoming, options_.offer.max_msg_fds);
  for (;;) {
    // A read may have brought several messages: serve those before waiting.
    pollfd p{socket_.get(), POLLIN, 0};
    if (!reader.has_message() && ::poll(&p, 1, -1) < 0 && errno != EINTR) {
      FailAll(Error{errno, "poll"});
      return;
    }
    auto got = reader.ReadSome(socket_.get());
    if (!got.has_value()) {
      Error error = got.error();
      if (error.code == ECONNRESET) error.context = "server closed the connection";
      FailAll(std::move(error));
      return;
    }
    if (!got->has_value()) continue;
    Message message = std::move(**got);
    if (message.is_reply()) {
      Deliver(std::move(message));
    } else {
      ServeRequest(std::move(message));
    }
  }
}

void Client::Deliver(Message reply) {
  MutexLock lock(mu_);
  auto it = pending_.find(reply.header.msg_id);
  if (it == pending_.end() || it->second.reply.has_value()) {
    ++unexpected_replies_;
    return;
  }
  it->second.reply = std::move(reply);
  replied_.NotifyAll();
}

Result<void> Client::SendLocked(const Header& header, std::span<const std::byte> payload,
                                std::span<const int> fds) {
  MutexLock lock(send_mu_);
  return SendMessage(socket_.get(), header, payload, fds);
}

Result<uint16_t> Client::Send(uint16_t command, std::span<const std::byte> payload,
                              std::span<const int> fds, uint32_t flags) {
  uint16_t id;
  {
    MutexLock lock(mu_);
    if (broken_.has_value()) return std::unexpected(*broken_);
    id = next_id_++;
  }
  Header header{};
  header.msg_id = id;
  header.command = command;
  header.flags = flags;
  auto sent = SendLocked(header, payload, fds);
  if (!sent.has_value()) return std::unexpected(Wrap(sent.error(), CommandName(command)));
  return id;
}

Result<Message> Client::Call(uint16_t command, std::span<const std::byte> payload,
                             std::span<const int> fds, uint32_t flags) {
  uint16_t id;
  {
    MutexLock lock(mu_);
    if (broken_.has_value()) return std::unexpected(*broken_);
    do {
      id = next_id_++;
    } while (pending_.contains(id));
    pending_[id];
  }
  Header header{};
  header.msg_id = id;
  header.command = command;
  header.flags = flags;
  auto sent = SendLocked(header, payload, fds);
  MutexLock lock(mu_);
  if (!sent.has_value()) {
    pending_.erase(id);
    return std::unexpected(Wrap(sent.error(), CommandName(command)));
  }
  const auto timeout = std::chrono::milliseconds(timeout_ms_.load());
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto it = pending_.find(id);
    if (it->second.reply.has_value()) {
      Message reply = std::move(*it->second.reply);
      pending_.erase(it);
      return reply;
    }
    if (broken_.has_value()) {
      pending_.erase(it);
      return std::unexpected(Wrap(*broken_, CommandName(command)));
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      pending_.erase(it);  // A late reply is counted as unexpected.
      return Fail(ETIMEDOUT, fmt::format("{}: no reply within {} ms", CommandName(command),
                                         timeout.count()));
    }
    replied_.WaitFor(mu_, deadline - now);
  }
}

Result<void> Client::Negotiate() {
  const std::string json = OfferJson(options_);
  std::vector<std::byte> payload;
  AppendPod(payload, VersionPayload{kVersionMajor, kVersionMinor});
  AppendBytes(payload, std::as_bytes(std::span(json)));
  UMDEV_ASSIGN_OR_RETURN(Message reply, Expect(Command::kVersion, payload));
  auto version = LoadPayload<VersionPayload>(reply.payload);
  if (!version.has_value()) return Fail(EPROTO, "VERSION: reply is too short");
  if (version->major != kVersionMajor) {
    return Fail(EPROTO, fmt::format("VERSION: server major {} is not {}", version->major,
                                    kVersionMajor));
  }
  if (version->minor > kVersionMinor) {
    return Fail(EPROTO, fmt::format("VERSION: server minor {} is above ours ({})",
                                    version->minor, kVersionMinor));
  }
  const auto json_part = std::span<const std::byte>(reply.payload).subspan(sizeof(VersionPayload));
  auto caps = ParseCapabilities(json_part);
  if (!caps.has_value()) return Fail(EPROTO, caps.error().context);
  const Capabilities& offer = options_.offer;
  if (caps->max_msg_fds > kQemuMaxMsgFds) {
    return Fail(EPROTO, fmt::format("VERSION: max_msg_fds {} is over {}", caps->max_msg_fds,
                                    kQemuMaxMsgFds));
  }
  if (caps->max_data_xfer_size == 0 || caps->max_data_xfer_size > kQemuMaxDataXfer) {
    return Fail(EPROTO, fmt::format("VERSION: max_data_xfer_size {} is out of range",
                                    caps->max_data_xfer_size));
  }
  if (caps->pgsizes == 0 || caps->pgsizes % 4096 != 0) {
    return Fail(EPROTO, fmt::format("VERSION: pgsizes {:#x} is not a multiple of 4 KiB",
                                    caps->pgsizes));
  }
  if (caps->max_dma_maps > offer.max_dma_maps) {
    return Fail(EPROTO, fmt::format("VERSION: max_dma_maps {} is over our {}",
                                    caps->max_dma_maps, offer.max_dma_maps));
  }
  if (caps->write_multiple && !offer.write_multiple) {
    return Fail(EPROTO, "VERSION: write_multiple was not offered");
  }
  if (caps->twin_socket) return Fail(EPROTO, "VERSION: twin_socket was not offered");
  MutexLock lock(mu_);
  server_caps_ = *caps;
  server_minor_ = version->minor;
  return {};
}

// --- Guest memory -----------------------------------------------------------

Result<std::span<std::byte>> Client::AddGuestMemory(uint64_t iova, uint64_t size, bool share_fd,
                                                    uint32_t prot) {
  if (size == 0) return Fail(EINVAL, "guest memory: size 0");
  UniqueFd memfd(::memfd_create("umdev-guest", MFD_CLOEXEC));
  if (!memfd) return FailErrno("memfd_create");
  if (::ftruncate(memfd.get(), static_cast<off_t>(size)) != 0) return FailErrno("ftruncate");
  UMDEV_ASSIGN_OR_RETURN(Mapping mapping, Mapping::Map(memfd.get(), 0, size,
                                                       PROT_READ | PROT_WRITE, MAP_SHARED));
  GuestRegion region;
  region.size = size;
  region.prot = prot;
  region.data = mapping.data();
  region.mapping = std::move(mapping);
  const std::span<std::byte> bytes(region.data, size);
  UMDEV_TRY(RegisterGuest(iova, std::move(region), share_fd ? memfd.get() : -1));
  return bytes;
}

Result<void> Client::AddGuestMemory(uint64_t iova, std::span<std::byte> memory, uint32_t prot) {
  if (memory.empty()) return Fail(EINVAL, "guest memory: size 0");
  GuestRegion region;
  region.size = memory.size();
  region.prot = prot;
  region.data = memory.data();
  return RegisterGuest(iova, std::move(region), -1);
}

Result<void> Client::RegisterGuest(uint64_t iova, GuestRegion region, int fd) {
  const uint64_t size = region.size;
  const uint32_t prot = region.prot;
  if (iova + size < iova) return Fail(EINVAL, "guest memory: range wraps");
  {
    MutexLock lock(mem_mu_);
    auto next = guest_.lower_bound(iova);
    const bool overlaps_next = next != guest_.end() && next->first < iova + size;
    const bool overlaps_prev = next != guest_.begin() &&
                               std::prev(next)->first + std::prev(next)->second.size > iova;
    if (overlaps_next || overlaps_prev) {
      return Fail(EEXIST, fmt::format("guest memory: {:#x}+{:#x} overlaps", iova, size));
    }
    guest_.emplace(iova, std::move(region));
  }
  auto mapped = DmaMap(iova, size, prot, fd, 0);
  if (!mapped.has_value()) {
    MutexLock lock(mem_mu_);
    guest_.erase(iova);
    return mapped;
  }
  return {};
}

Result<void> Client::RemoveGuestMemory(uint64_t iova) {
  uint64_t size;
  {
    MutexLock lock(mem_mu_);
    auto it = guest_.find(iova);
    if (it == guest_.end()) return Fail(ENOENT, fmt::format("guest memory at {:#x}", iova));
    size = it->second.size;
  }
  UMDEV_TRY(DmaUnmap(iova, size));
  MutexLock lock(mem_mu_);
  guest_.erase(iova);
  return {};
}

const Client::GuestRegion* Client::FindGuest(uint64_t iova, uint64_t size,
                                             uint64_t* base) const {
  auto it = guest_.upper_bound(iova);
  if (it == guest_.begin()) return nullptr;
  --it;
  const uint64_t offset = iova - it->first;
  if (offset > it->second.size || size > it->second.size - offset) return nullptr;
  *base = it->first;
  return &it->second;
}

Result<void> Client::ReadGuestMemory(uint64_t iova, std::span<std::byte> out) const {
  MutexLock lock(mem_mu_);
  uint64_t base = 0;
  const GuestRegion* region = FindGuest(iova, out.size(), &base);
  if (region == nullptr) {
    return Fail(EFAULT, fmt::format("guest memory {:#x}+{:#x} is not registered", iova,
                                    out.size()));
  }
  std::memcpy(out.data(), region->data + (iova - base), out.size());
  return {};
}

Result<void> Client::WriteGuestMemory(uint64_t iova, std::span<const std::byte> data) {
  MutexLock lock(mem_mu_);
  uint64_t base = 0;
  const GuestRegion* region = FindGuest(iova, data.size(), &base);
  if (region == nullptr) {
    return Fail(EFAULT, fmt::format("guest memory {:#x}+{:#x} is not registered", iova,
                                    data.size()));
  }
  std::memcpy(region->data + (iova - base), data.data(), data.size());
  return {};
}

// --- Requests from the server ----------------------------------------------

Result<std::vector<std::byte>> Client::ServeDma(const Message& request) {
  const bool is_read = request.header.command == static_cast<uint16_t>(Command::kDmaRead);
  const char* name = is_read ? "DMA_READ" : "DMA_WRITE";
  if (!request.fds.empty() || request.fds_truncated) {
    return Fail(EINVAL, fmt::format("{}: request carries fds", name));
  }
  if (request.oversized) return Fail(E2BIG, fmt::format("{}: message too large", name));
  auto access = LoadPayload<DmaAccessPayload>(request.payload);
  if (!access.has_value()) return Fail(EINVAL, fmt::format("{}: short request", name));
  if (access->count > options_.offer.max_data_xfer_size) {
    return Fail(E2BIG, fmt::format("{}: count {} is over max_data_xfer_size", name,
                                   access->count));
  }
  const size_t data_bytes = request.payload.size() - sizeof(DmaAccessPayload);
  if (data_bytes != (is_read ? 0 : access->count)) {
    return Fail(EINVAL, fmt::format("{}: {} data bytes for count {}", name, data_bytes,
                                    access->count));
  }
  std::vector<std::byte> reply;
  AppendPod(reply, *access);
  MutexLock lock(mem_mu_);
  uint64_t base = 0;
  const GuestRegion* region = FindGuest(access->address, access->count, &base);
  if (region == nullptr) {
    return Fail(EFAULT, fmt::format("{}: {:#x}+{:#x} is not guest memory", name,
                                    access->address, access->count));
  }
  const uint32_t needed = is_read ? VFIO_DMA_MAP_FLAG_READ : VFIO_DMA_MAP_FLAG_WRITE;
  if ((region->prot & needed) == 0) {
    return Fail(EPERM, fmt::format("{}: {:#x} is not mapped for it", name, access->address));
  }
  std::byte* at = region->data + (access->address - base);
  if (is_read) {
    reply.insert(reply.end(), at, at + access->count);
  } else {
    std::memcpy(at, request.payload.data() + sizeof(DmaAccessPayload), access->count);
  }
  return reply;
}

void Client::ServeRequest(Message request) {
  const uint16_t command = request.header.command;
  Result<std::vector<std::byte>> answer =
      command == static_cast<uint16_t>(Command::kDmaRead) ||
              command == static_cast<uint16_t>(Command::kDmaWrite)
          ? ServeDma(request)
          : Fail(ENOSYS, CommandName(command) + ": not a server-to-client command");
  ++requests_served_;
  if (!request.wants_reply()) return;
  Header header{};
  header.msg_id = request.header.msg_id;
  header.command = command;
  header.flags = kTypeReply;
  std::vector<std::byte> payload;
  if (answer.has_value()) {
    payload = std::move(*answer);
  } else {
    header.flags |= kFlagError;
    header.error_no = static_cast<uint32_t>(answer.error().code);
  }
  // A failed send means the connection is going; the receive loop sees it.
  (void)SendLocked(header, payload, {});
}

}  // namespace umdev::vfio_user
