// Endpoint: the per-device socket, peer checks, and the session's lifetime.
#include "endpoint.h"

#include "shared_iommu.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "umdev/common/accept.h"
#include "umdev/common/unix_address.h"
#include "umdev/kvm/vfio_file.h"
#include "umdev/vfio_user/message.h"

namespace umdev::vfio_user {

Endpoint::Endpoint(Registry& registry, GroupUsers& groups, std::string name, std::string path,
                   EventLoop& loop, const ServerOptions& options)
    : registry_(registry),
      groups_(groups),
      path_(std::move(path)),
      name_(std::move(name)),
      loop_(loop),
      options_(options),
      allowed_uids_(options.allowed_uids) {
  if (allowed_uids_.empty()) allowed_uids_.push_back(::geteuid());
}

Result<void> Endpoint::Open() {
  UMDEV_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path_));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return FailErrno("socket");
  ::unlink(path_.c_str());  // A leftover of a daemon that died: the state-dir lock is ours.
  // Bound under a 0177 umask, so the socket is never open to others, not even briefly.
  const mode_t old_mask = ::umask(0177);
  const int bound = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::umask(old_mask);
  if (bound != 0) return FailErrno("bind " + path_);
  if (options_.socket_uid || options_.socket_gid) {
    const uid_t uid = options_.socket_uid.value_or(static_cast<uid_t>(-1));
    const gid_t gid = options_.socket_gid.value_or(static_cast<gid_t>(-1));
    if (::chown(path_.c_str(), uid, gid) != 0) {
      auto error = FailErrno("chown " + path_);
      ::unlink(path_.c_str());
      return error;
    }
  }
  if (::listen(fd.get(), 4) != 0) {
    auto error = FailErrno("listen " + path_);
    ::unlink(path_.c_str());
    return error;
  }
  Result<void> watched;
  loop_.RunSync([&] {
    listener_ = std::move(fd);
    auto id = loop_.Watch(listener_.get(), [this](uint32_t) { OnAcceptable(); });
    if (!id.has_value()) {
      watched = std::unexpected(id.error());
      listener_.Reset();
      return;
    }
    listen_watch_ = *id;
  });
  if (!watched.has_value()) ::unlink(path_.c_str());
  return watched;
}

void Endpoint::Close() {
  loop_.RunSync([this] {
    if (closed_) return;
    closed_ = true;
    DropClient();
    if (listener_) {
      loop_.Unwatch(listen_watch_);
      listener_.Reset();
      ::unlink(path_.c_str());
    }
  });
}

void Endpoint::SetAllowedUids(std::vector<uid_t> uids) {
  MutexLock lock(mu_);
  allowed_uids_ = std::move(uids);
}

bool Endpoint::PeerHungUp(int connection) {
  pollfd p{connection, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

Result<void> Endpoint::CheckPeer(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return FailErrno("SO_PEERCRED");
  }
  MutexLock lock(mu_);
  if (std::find(allowed_uids_.begin(), allowed_uids_.end(), cred.uid) == allowed_uids_.end()) {
    return Fail(EACCES, fmt::format("peer pid {} uid {} is not on the device's allow-list",
                                    cred.pid, cred.uid));
  }
  return {};
}

void Endpoint::OnAcceptable() {
  auto accepted = AcceptConnection(listener_.get(), SOCK_CLOEXEC, "vfio-user " + name_);
  if (!accepted.has_value()) return;  // EAGAIN, a client that left, or EMFILE (logged).
  UniqueFd socket = std::move(*accepted);
  if (client_ && !client_->gone && !PeerHungUp(client_->connection.get())) {
    spdlog::warn("vfio-user: {}: refused a second client: one is attached already", name_);
    return;
  }
  // A client that left (or whose peer just hung up, its session still being
  // torn down on its thread): wait for that, then take the new one, so that
  // a client may reconnect at once.
  DropClient();
  if (auto allowed = CheckPeer(socket.get()); !allowed.has_value()) {
    spdlog::warn("vfio-user: {}: refused a client: {}", name_, allowed.error().Describe());
    return;
  }
  auto client_loop = EventLoop::Create("vfu-" + name_.substr(0, 8));
  if (!client_loop.has_value()) {
    spdlog::error("vfio-user: {}: refused a client: {}", name_,
                  client_loop.error().Describe());
    return;
  }
  auto client = std::make_unique<Client>();
  client->loop = std::move(*client_loop);
  client->connection = UniqueFd(::fcntl(socket.get(), F_DUPFD_CLOEXEC, 0));
  if (!client->connection) {
    spdlog::warn("vfio-user: {}: refused a client: {}", name_,
                 FailErrno("dup").error().Describe());
    return;
  }
  client->loop->Start();
  // Connected from before the first command is served: a client quick
  // enough to finish before its thread starts serving must not read as
  // never seen.
  connected_ = true;
  // Everything that reads the client's /proc entries or may wait on the
  // client runs on its own thread, never on the shared loop.
  Client& served = *client;
  auto handed = std::make_shared<UniqueFd>(std::move(socket));
  served.loop->Post([this, &served, handed] { ServeClient(served, std::move(*handed)); });
  client_ = std::move(client);
}

void Endpoint::ServeClient(Client& client, UniqueFd socket) {
  client.peer = kvm::ClientVm::Identify(socket.get(), options_.identify);
  const kvm::ClientVm& peer = *client.peer;
  if (!peer.notes().empty()) {
    spdlog::info("vfio-user: {}: client pid {} identified in part: {}", name_,
                 peer.identity().pid, peer.NotesText());
  }
  auto session = [&]() -> Result<std::unique_ptr<Session>> {
    // A client that does not read its replies holds only its own thread,
    // and only until the message timeout: then it is dropped.
    const auto ms = options_.message_timeout.count();
    timeval timeout{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
    if (::setsockopt(socket.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout)) != 0) {
      return FailErrno("SO_SNDTIMEO");
    }
    UMDEV_ASSIGN_OR_RETURN(OpenedDevice device, OpenDevice(client.peer));
    // The device's busy_poll_us, read each time the client's thread would
    // sleep: a latency-critical device keeps its thread polling a while.
    client.loop->SetBusyPoll([setting = device.file->device().busy_poll_us()] {
      return std::chrono::nanoseconds(std::chrono::microseconds(setting->load()));
    });
    SessionLimits limits;
    limits.message_timeout = options_.message_timeout;
    limits.max_msg_fds = options_.max_msg_fds;
    limits.max_data_xfer_size = options_.max_data_xfer_size;
    return std::make_unique<Session>(name_, std::move(socket), std::move(device), *client.loop,
                                     limits);
  }();
  if (!session.has_value()) {
    spdlog::warn("vfio-user: {}: refused {}: {}", name_, peer.Describe(),
                 session.error().Describe());
    if (socket) RefuseClient(socket.get(), session.error());
    FinishClient(client);
    return;
  }
  client.session = std::move(*session);
  auto watched = client.loop->Watch(client.session->fd(),
                                    [this, &client](uint32_t) { OnSessionReadable(client); });
  Result<uint64_t> pid_watched = uint64_t{0};
  if (watched.has_value() && peer.pidfd() >= 0) {
    pid_watched = client.loop->Watch(peer.pidfd(),
                                     [this, &client](uint32_t) { OnClientExited(client); });
  }
  if (!watched.has_value() || !pid_watched.has_value()) {
    spdlog::error("vfio-user: {}: cannot watch the client: {}", name_,
                  (watched.has_value() ? pid_watched.error() : watched.error()).Describe());
    if (watched.has_value()) client.loop->Unwatch(*watched);
    client.session.reset();  // Closes the device and unmaps, on its own thread.
    FinishClient(client);
    return;
  }
  client.watch = *watched;
  client.pid_watch = *pid_watched;
  const VmIdentity& id = peer.identity();
  spdlog::info("vfio-user: {}: client attached: {} (accel {}{}{})", name_, peer.Describe(),
               id.accel, id.uuid.empty() ? "" : ", uuid " + id.uuid,
               id.cgroup.empty() ? "" : ", cgroup " + id.cgroup);
}

Result<OpenedDevice> Endpoint::OpenDevice(const std::shared_ptr<kvm::ClientVm>& vm) {
  UMDEV_ASSIGN_OR_RETURN(auto group, registry_.FindGroupOfDevice(name_));
  const pid_t pid = vm != nullptr ? vm->identity().pid : 0;
  std::shared_ptr<GroupUsers::Holder> holder;
  {
    MutexLock lock(groups_.mu);
    std::weak_ptr<GroupUsers::Holder>& slot = groups_.holders[group->id()];
    holder = slot.lock();
    if (holder != nullptr && (holder->space == nullptr || holder->pid != pid)) {
      return Fail(EBUSY, fmt::format("IOMMU group {} is in use by another client (pid {})",
                                     group->id(), holder->pid));
    }
    if (holder == nullptr) {
      // What QEMU's VFIO and KVM do for a group: open it, put it in a
      // container of its own (clients never share DMA), pick type1v2, hand
      // the file to KVM (which records the VM and holds the group).
      holder = std::make_shared<GroupUsers::Holder>();
      UMDEV_ASSIGN_OR_RETURN(holder->file, group->Open());
      holder->container = registry_.CreateContainer();
      UMDEV_TRY(holder->file->SetContainer(holder->container));
      UMDEV_TRY(holder->container->SetIommu(VFIO_TYPE1v2_IOMMU));
      UMDEV_ASSIGN_OR_RETURN(holder->kvm_file, kvm::KvmVfioFile::Add(holder->file, vm));
      if (group->devices().size() > 1) {
        holder->space = std::make_shared<SharedAddressSpace>(holder->container->iommu());
      }
      holder->pid = pid;
      slot = holder;
    }
  }
  // Then this endpoint's device, which latches the VM; a real group may
  // hold several.
  UMDEV_ASSIGN_OR_RETURN(auto file, holder->file->GetDeviceFd(name_));
  OpenedDevice opened;
  opened.iommu = holder->space != nullptr
                     ? std::make_shared<SharedAddressSpaceView>(holder->space)
                     : holder->container->iommu();
  opened.file = std::move(file);
  opened.holder = std::move(holder);
  return opened;
}

void Endpoint::RefuseClient(int socket, const Error& why) const {
  // vfio-user has no way to refuse a connection with a reason: answer the
  // client's first request (its VERSION) with the errno, then close.
  // QEMU sends VERSION as soon as it connects; a client that does not is
  // given a second at most, so closing the endpoint never waits longer.
  MessageReader reader(kHeaderSize + 4096, 0);
  auto first = ReceiveMessage(socket, reader,
                              std::min(options_.message_timeout, std::chrono::milliseconds(1000)));
  if (!first.has_value() || first->is_reply()) return;
  Header reply = first->header;
  reply.flags = kTypeReply | kFlagError;
  reply.error_no = static_cast<uint32_t>(why.code);
  (void)SendMessage(socket, reply, {});
}

void Endpoint::OnSessionReadable(Client& client) {
  if (!client.session || client.session->OnReadable()) return;
  EndSession(client);
  FinishClient(client);
}

void Endpoint::OnClientExited(Client& client) {
  if (!client.session) return;
  spdlog::info("vfio-user: {}: {} exited; ending its session", name_, client.peer->Describe());
  EndSession(client);
  FinishClient(client);
}

void Endpoint::FinishClient(Client& client) {
  client.gone = true;
  // The thread cannot join itself: the shared loop does it. A weak pointer,
  // as the endpoint may be closed and freed before the task runs.
  loop_.Post([weak = weak_from_this()] {
    if (auto self = weak.lock()) self->ReapEndedClient();
  });
}

void Endpoint::EndSession(Client& client) const {
  if (!client.session) return;
  client.loop->Unwatch(client.watch);
  if (client.pid_watch != 0) client.loop->Unwatch(client.pid_watch);
  client.pid_watch = 0;
  client.session.reset();  // Closes the device and unmaps its DMA.
  client.gone = true;
  spdlog::info("vfio-user: {}: client detached: {}", name_, client.peer->Describe());
}

void Endpoint::ReapEndedClient() {
  // Posted from the client thread; run there only if the shared loop had
  // already stopped, and then the thread is joined by Close instead.
  if (!client_ || !client_->gone || client_->loop->OnLoopThread()) return;
  client_->loop->Stop();
  client_.reset();
  connected_ = false;
}

void Endpoint::DropClient() {
  if (!client_) return;
  Client& client = *client_;
  client.loop->RunSync([&] { EndSession(client); });
  client.loop->Stop();
  client_.reset();
  connected_ = false;
}

}  // namespace umdev::vfio_user
