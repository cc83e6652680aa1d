// Client eventfds: the kind check, and writes bounded by a per-thread timer.
#include "umdev/common/eventfd.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>

#include <fmt/format.h>

namespace umdev {
namespace {

// How long a signal write may block before it is interrupted. An eventfd
// write only blocks when the client left the counter at its maximum and made
// the fd blocking again behind our back: that interrupt is then pending anyway.
constexpr long kWriteBoundNs = 5'000'000;

int InterruptSignal() { return SIGRTMIN + 4; }

void OnInterrupt(int) {}

void InstallInterruptHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_handler = OnInterrupt;
    action.sa_flags = 0;  // No SA_RESTART: the blocked write returns EINTR.
    sigemptyset(&action.sa_mask);
    ::sigaction(InterruptSignal(), &action, nullptr);
  });
}

// A timer that signals this thread alone; one per thread, made on first use.
class ThreadTimer {
 public:
  ThreadTimer() {
    InstallInterruptHandler();
    sigevent event{};
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = InterruptSignal();
    event._sigev_un._tid = ::gettid();
    ok_ = ::timer_create(CLOCK_MONOTONIC, &event, &timer_) == 0;
  }
  ~ThreadTimer() {
    if (ok_) ::timer_delete(timer_);
  }
  ThreadTimer(const ThreadTimer&) = delete;
  ThreadTimer& operator=(const ThreadTimer&) = delete;

  bool Arm(long ns) {
    if (!ok_) return false;
    itimerspec spec{};
    spec.it_value.tv_nsec = ns;
    spec.it_interval.tv_nsec = ns;  // Again, should the first land outside the write.
    return ::timer_settime(timer_, 0, &spec, nullptr) == 0;
  }
  void Disarm() {
    itimerspec spec{};
    ::timer_settime(timer_, 0, &spec, nullptr);
  }

 private:
  timer_t timer_{};
  bool ok_ = false;
};

}  // namespace

bool IsEventFd(int fd) {
  if (fd < 0) return false;
  char link[64] = {};
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(path.c_str(), link, sizeof(link) - 1);
  return n > 0 && std::strcmp(link, "anon_inode:[eventfd]") == 0;
}

Result<void> AdoptClientEventFd(int fd, const char* what) {
  if (!IsEventFd(fd)) return Fail(EINVAL, fmt::format("{}: fd is not an eventfd", what));
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return FailErrno(fmt::format("{}: F_GETFL", what));
  if ((flags & O_NONBLOCK) == 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return FailErrno(fmt::format("{}: F_SETFL O_NONBLOCK", what));
  }
  return {};
}

// Every write and read runs under the thread's timer: the fd is non-blocking
// once adopted, but the client shares the open file and may clear the flag
// at any moment, so checking it first would leave a window.
template <typename Io>
ssize_t Bounded(Io io) {
  thread_local ThreadTimer timer;
  if (!timer.Arm(kWriteBoundNs)) return -1;  // Without a timer, never risk a block.
  const ssize_t n = io();
  timer.Disarm();
  return n;
}

void SignalEventFd(int fd) {
  if (fd < 0) return;
  const uint64_t one = 1;
  // EAGAIN (or EINTR from the timer): the counter is full, an event pending.
  (void)Bounded([&] { return ::write(fd, &one, sizeof(one)); });
}

bool DrainEventFd(int fd) {
  if (fd < 0) return false;
  // Nothing pending: do not even try (a blocking fd would wait for the timer).
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) != 1 || (p.revents & POLLIN) == 0) return false;
  uint64_t count = 0;
  const ssize_t n = Bounded([&] { return ::read(fd, &count, sizeof(count)); });
  return n == static_cast<ssize_t>(sizeof(count)) && count != 0;
}

}  // namespace umdev
