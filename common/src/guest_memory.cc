// CopyGuestMemory: a SIGBUS handler that unwinds to a per-thread recovery
// point set around each copy of guest memory.
#include "umdev/common/guest_memory.h"

#include <setjmp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>

#include <fmt/format.h>

namespace umdev {
namespace {

// Set only while this thread is inside a guarded copy. Volatile, with signal
// fences around the copy: the compiler knows memcpy does not read it and
// would otherwise drop the store before the copy as dead.
thread_local sigjmp_buf* volatile t_recovery = nullptr;
struct sigaction g_previous {};

void OnSigbus(int signo, siginfo_t* info, void* context) {
  if (sigjmp_buf* recovery = t_recovery; recovery != nullptr) {
    t_recovery = nullptr;
    siglongjmp(*recovery, 1);
  }
  // Not a guarded copy: hand the fault to whoever had SIGBUS before us (the
  // default disposition, or a sanitizer's report).
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(signo, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN &&
      g_previous.sa_handler != nullptr) {
    g_previous.sa_handler(signo);
    return;
  }
  // Returning re-runs the faulting access, which now meets the default action.
  ::signal(SIGBUS, SIG_DFL);
}

void InstallHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_sigaction = OnSigbus;
    // SA_NODEFER: the handler leaves by siglongjmp without restoring the
    // signal mask, so SIGBUS must not be blocked while it runs.
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, &g_previous);
  });
}

// The copy itself lives in its own frame, so nothing of the caller's is
// live across the siglongjmp. |what| is only for the message.
template <typename Access>
Result<void> Guarded(Access access, const void* address, size_t size, const char* what) {
  InstallHandler();
  sigjmp_buf recovery;
  sigjmp_buf* const outer = t_recovery;
  if (sigsetjmp(recovery, 0) != 0) {
    t_recovery = outer;
    return Fail(EFAULT, fmt::format("{} of {:#x} bytes at {}: guest memory has no backing "
                                    "(the client truncated it)",
                                    what, size, address));
  }
  t_recovery = &recovery;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  access();
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_recovery = outer;
  return {};
}

}  // namespace

Result<void> CopyGuestMemory(void* dst, const void* src, size_t size) {
  if (size == 0) return {};
  return Guarded([=] { std::memcpy(dst, src, size); }, src, size, "guest memory copy");
}

Result<void> ProbeGuestMemory(const void* address, size_t size) {
  if (size == 0) return {};
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  return Guarded(
      [=] {
        const auto* bytes = static_cast<const volatile unsigned char*>(address);
        const uintptr_t begin = reinterpret_cast<uintptr_t>(address);
        for (uintptr_t at = begin & ~(page - 1); at < begin + size; at += page) {
          const uintptr_t offset = std::max(at, begin) - begin;
          (void)bytes[offset];
        }
      },
      address, size, "guest memory probe");
}

}  // namespace umdev
