// AcceptConnection: the reserved-descriptor way out of EMFILE.
#include "umdev/common/accept.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>

#include <spdlog/spdlog.h>

#include "umdev/common/mutex.h"

namespace umdev {
namespace {

Mutex g_reserve_mu;
UniqueFd g_reserve UMDEV_GUARDED_BY(g_reserve_mu);
std::atomic<int64_t> g_last_log_ns{0};

void KeepReserveLocked() UMDEV_REQUIRES(g_reserve_mu) {
  if (!g_reserve) g_reserve = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
}

bool ShouldLog() {
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t last = g_last_log_ns.load();
  return now - last >= 1'000'000'000 && g_last_log_ns.compare_exchange_strong(last, now);
}

}  // namespace

void ReserveAcceptDescriptor() {
  MutexLock lock(g_reserve_mu);
  KeepReserveLocked();
}

Result<UniqueFd> AcceptConnection(int listener, int flags, std::string_view what) {
  ReserveAcceptDescriptor();
  UniqueFd connection(::accept4(listener, nullptr, nullptr, flags));
  if (connection) return connection;
  const int error = errno;
  if (error != EMFILE && error != ENFILE) return Fail(error, "accept");
  {
    MutexLock lock(g_reserve_mu);
    g_reserve.Reset();
    UniqueFd refused(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    refused.Reset();
    // Logged while the reserve is free: whatever the logger needs, it has
    // a descriptor.
    if (ShouldLog()) {
      spdlog::error("{}: refused a connection: the daemon is at its descriptor limit ({}); "
                    "existing clients are still served",
                    what, ErrnoName(error));
    }
    KeepReserveLocked();
  }
  return Fail(error, "accept: at the descriptor limit");
}

Result<unsigned long> RaiseFdLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return FailErrno("getrlimit RLIMIT_NOFILE");
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return FailErrno("setrlimit RLIMIT_NOFILE");
  }
  return static_cast<unsigned long>(limit.rlim_cur);
}

}  // namespace umdev
