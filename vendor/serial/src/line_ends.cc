// LineEnd and LineThread: pty and socket far ends over poll().
#include "line_ends.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "umdev/common/unix_address.h"

namespace umdev::vendor::serial {

LineEnd::~LineEnd() {
  if (listener_.valid() && !path_.empty()) ::unlink(path_.c_str());
}

Result<LineEnd> LineEnd::OpenPty() {
  LineEnd end;
  end.data_ = UniqueFd(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK));
  if (!end.data_) return FailErrno("posix_openpt");
  if (::grantpt(end.data_.get()) != 0) return FailErrno("grantpt");
  if (::unlockpt(end.data_.get()) != 0) return FailErrno("unlockpt");
  char name[128];
  if (const int err = ::ptsname_r(end.data_.get(), name, sizeof(name)); err != 0) {
    return Fail(err, "ptsname_r");
  }
  end.path_ = name;
  end.pty_slave_ = UniqueFd(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK));
  if (!end.pty_slave_) return FailErrno("open " + end.path_);
  // Raw mode: bytes pass unchanged both ways (no echo, no line editing, no
  // CR/LF translation), as a serial line carries them.
  termios tio{};
  if (::tcgetattr(end.pty_slave_.get(), &tio) != 0) return FailErrno("tcgetattr " + end.path_);
  ::cfmakeraw(&tio);
  if (::tcsetattr(end.pty_slave_.get(), TCSANOW, &tio) != 0) {
    return FailErrno("tcsetattr " + end.path_);
  }
  return end;
}

Result<LineEnd> LineEnd::Listen(const std::string& path) {
  UMDEV_ASSIGN_OR_RETURN(const sockaddr_un address, UnixAddress(path));
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Fail(EADDRINUSE, path + " exists and is not a socket");
    ::unlink(path.c_str());
  }
  LineEnd end;
  end.listener_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!end.listener_) return FailErrno("socket");
  if (::bind(end.listener_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) !=
      0) {
    return FailErrno("bind " + path);
  }
  end.path_ = path;  // From here on the destructor removes it.
  if (::listen(end.listener_.get(), 1) != 0) return FailErrno("listen " + path);
  return end;
}

bool LineEnd::Accept() {
  UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!client) return false;
  if (data_.valid()) {
    spdlog::info("mtty: refusing a second client on {}", path_);
    return false;  // |client| closes here.
  }
  data_ = std::move(client);
  return true;
}

Result<std::vector<LineEnd>> OpenLineEnds(const FarEndSpec& spec, unsigned ports) {
  std::vector<LineEnd> ends;
  for (unsigned port = 0; port < ports; ++port) {
    switch (spec.kind) {
      case FarEndKind::kPty: {
        UMDEV_ASSIGN_OR_RETURN(LineEnd end, LineEnd::OpenPty());
        ends.push_back(std::move(end));
        break;
      }
      case FarEndKind::kSocket: {
        UMDEV_ASSIGN_OR_RETURN(LineEnd end, LineEnd::Listen(spec.SocketPathFor(port)));
        ends.push_back(std::move(end));
        break;
      }
      default:
        return ends;
    }
  }
  return ends;
}

LineThread::LineThread(UniqueFd wake, InterestFn interest, ServeFn serve)
    : wake_(std::move(wake)), interest_(std::move(interest)), serve_(std::move(serve)) {}

Result<std::unique_ptr<LineThread>> LineThread::Start(InterestFn interest, ServeFn serve) {
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) return FailErrno("eventfd");
  std::unique_ptr<LineThread> thread(
      new LineThread(std::move(wake), std::move(interest), std::move(serve)));
  thread->thread_ = std::thread([raw = thread.get()] { raw->Run(); });
  return thread;
}

LineThread::~LineThread() {
  stop_.store(true);
  Kick();
  if (thread_.joinable()) thread_.join();
}

void LineThread::Kick() const {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof(one));
}

void LineThread::Run() {
  while (!stop_.load()) {
    std::vector<pollfd> fds = interest_();
    fds.push_back(pollfd{.fd = wake_.get(), .events = POLLIN, .revents = 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("mtty: line poll failed: {}", strerror(errno));
      return;
    }
    if (fds.back().revents != 0) {
      uint64_t count = 0;
      [[maybe_unused]] ssize_t n = ::read(wake_.get(), &count, sizeof(count));
    }
    fds.pop_back();
    if (stop_.load()) return;
    serve_(fds);
  }
}

}  // namespace umdev::vendor::serial
