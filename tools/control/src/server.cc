// ControlServer: the accept loop and per-connection line protocol.
#include "umdev/control/server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstring>

#include "umdev/common/accept.h"

#include "umdev/common/unix_address.h"
#include "umdev/control/protocol.h"

namespace umdev::control {
namespace {

// A connection that says nothing for this long is dropped, so an idle client
// cannot hold one of the kMaxConnections slots forever.
constexpr int kIdleTimeoutMs = 60'000;

Result<void> SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("send reply");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

bool SendJson(int fd, const nlohmann::json& reply) {
  return SendAll(fd, reply.dump() + "\n").has_value();
}

}  // namespace

ControlServer::ControlServer(Registry& registry, std::string socket_path, DefinitionStore* store,
                             const sysfs::Tree* tree)
    : registry_(registry), store_(store), tree_(tree), socket_path_(std::move(socket_path)) {}

Result<void> ControlServer::Start() {
  UMDEV_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(socket_path_));
  // Non-blocking: accept() must never wait for a client that left.
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return FailErrno("control socket");
  // The state-dir lock guarantees no live daemon owns a socket left here.
  ::unlink(socket_path_.c_str());
  // Bind under a 0177 umask so the socket is never reachable by others, even briefly.
  const mode_t old_mask = ::umask(0177);
  const int bound = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::umask(old_mask);
  if (bound != 0) return FailErrno("bind " + socket_path_);
  if (::listen(fd.get(), 16) != 0) return FailErrno("listen " + socket_path_);
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) return FailErrno("eventfd");
  listener_ = std::move(fd);
  wake_ = std::move(wake);
  ReserveAcceptDescriptor();
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return {};
}

void ControlServer::Stop() {
  if (!acceptor_.joinable()) return;
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  const uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
  acceptor_.join();
  std::vector<Worker> workers;
  {
    MutexLock lock(mu_);
    workers.swap(workers_);
  }
  for (auto& worker : workers) worker.thread.join();
  listener_.Reset();
  ::unlink(socket_path_.c_str());
}

void ControlServer::AcceptLoop() {
  for (;;) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) break;
    if (fds[1].revents != 0) break;
    if ((fds[0].revents & POLLIN) == 0) continue;
    // At the fd limit the connection is refused and closed, not left pending.
    auto accepted = AcceptConnection(listener_.get(), SOCK_CLOEXEC, "control");
    if (!accepted.has_value()) continue;
    UniqueFd connection = std::move(*accepted);
    MutexLock lock(mu_);
    if (stopping_) break;
    if (active_ >= kMaxConnections) {
      SendJson(connection.get(), ErrorReply(Error{EBUSY, "too many control connections"}));
      spdlog::warn("control: refused a connection: {} already open", active_);
      continue;
    }
    ReapLocked();
    ++active_;
    auto done = std::make_shared<std::atomic<bool>>(false);
    workers_.push_back(Worker{std::thread([this, done, fd = std::move(connection)]() mutable {
                                Serve(std::move(fd));
                                *done = true;
                              }),
                              done});
  }
}

void ControlServer::ReapLocked() {
  std::erase_if(workers_, [](Worker& worker) {
    if (!*worker.done) return false;
    worker.thread.join();  // Already past Serve(): returns at once.
    return true;
  });
}

void ControlServer::Serve(UniqueFd connection) {
  // A client that never reads its replies must not hold this worker (one of
  // kMaxConnections) for ever: a reply that cannot be sent in time ends it.
  const timeval send_timeout{kIdleTimeoutMs / 1000, (kIdleTimeoutMs % 1000) * 1000};
  (void)::setsockopt(connection.get(), SOL_SOCKET, SO_SNDTIMEO, &send_timeout,
                     sizeof(send_timeout));
  std::string buffer;
  char chunk[4096];
  for (bool open = true; open;) {
    pollfd fds[2] = {{connection.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    const int ready = ::poll(fds, 2, kIdleTimeoutMs);
    if (ready <= 0 || fds[1].revents != 0) break;
    const ssize_t n = ::recv(connection.get(), chunk, sizeof(chunk), 0);
    if (n <= 0) break;
    buffer.append(chunk, static_cast<size_t>(n));
    for (size_t newline; open && (newline = buffer.find('\n')) != std::string::npos;) {
      const auto request = nlohmann::json::parse(buffer.substr(0, newline), nullptr, false);
      buffer.erase(0, newline + 1);
      open = SendJson(connection.get(),
                      request.is_discarded()
                          ? ErrorReply(Error{EINVAL, "request is not valid JSON"})
                          : HandleRequest(registry_, store_, request, tree_));
    }
    if (buffer.size() > kMaxLineBytes) {
      SendJson(connection.get(), ErrorReply(Error{E2BIG, "request line too long"}));
      open = false;
    }
  }
  MutexLock lock(mu_);
  --active_;
}

}  // namespace umdev::control
