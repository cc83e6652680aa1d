// ControlClient: connect, send a request line, read the reply line.
#include "umdev/control/client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "umdev/common/unix_address.h"
#include "umdev/control/protocol.h"

namespace umdev::control {

Result<ControlClient> ControlClient::Connect(const std::string& socket_path) {
  UMDEV_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(socket_path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return FailErrno("socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return FailErrno("cannot reach umdevd at " + socket_path);
  }
  return ControlClient(std::move(fd));
}

Result<void> ControlClient::SetTimeout(std::chrono::milliseconds timeout) {
  const timeval limit{.tv_sec = static_cast<time_t>(timeout.count() / 1000),
                      .tv_usec = static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  for (int option : {SO_RCVTIMEO, SO_SNDTIMEO}) {
    if (::setsockopt(fd_.get(), SOL_SOCKET, option, &limit, sizeof(limit)) != 0) {
      return FailErrno("set the control socket's timeout");
    }
  }
  return {};
}

Result<nlohmann::json> ControlClient::Call(const nlohmann::json& request) {
  UMDEV_ASSIGN_OR_RETURN(nlohmann::json reply, Exchange(request));
  if (reply.value("ok", false) != true) return std::unexpected(ErrorFromReply(reply));
  return reply;
}

Result<nlohmann::json> ControlClient::Exchange(const nlohmann::json& request) {
  std::string line = request.dump() + "\n";
  for (std::string_view rest = line; !rest.empty();) {
    const ssize_t n = ::send(fd_.get(), rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    // A daemon that refuses the connection answers and closes before reading
    // the request; its reply is still queued for us, so go and read it.
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) break;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Fail(ETIMEDOUT, "send to umdevd timed out");
    if (n < 0) return FailErrno("send to umdevd");
    rest.remove_prefix(static_cast<size_t>(n));
  }
  size_t newline;
  while ((newline = buffered_.find('\n')) == std::string::npos) {
    char chunk[4096];
    const ssize_t n = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Fail(ETIMEDOUT, "umdevd did not answer in time");
    if (n < 0) return FailErrno("receive from umdevd");
    if (n == 0) return Fail(EPROTO, "umdevd closed the connection");
    buffered_.append(chunk, static_cast<size_t>(n));
  }
  auto reply = nlohmann::json::parse(buffered_.substr(0, newline), nullptr, false);
  buffered_.erase(0, newline + 1);
  if (reply.is_discarded() || !reply.is_object()) return Fail(EPROTO, "malformed reply from umdevd");
  return reply;
}

}  // namespace umdev::control
