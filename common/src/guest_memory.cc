// CopyGuestMemory: on x86-64 a copy routine whose every faulting
// instruction is listed, so that the SIGBUS handler resumes it at its error
// exit (the kernel's exception-table scheme for copy_from_user); elsewhere,
// and under the sanitizers (which must see the accesses), a per-thread
// recovery point set with sigsetjmp around memcpy.
#include "umdev/common/guest_memory.h"

#include <setjmp.h>
#include <signal.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

#include <fmt/format.h>

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define UMDEV_GUEST_COPY_TABLE 1
#else
#define UMDEV_GUEST_COPY_TABLE 0
#endif

#if UMDEV_GUEST_COPY_TABLE
// size_t umdev_guest_copy(void* dst, const void* src, size_t size): returns
// the bytes not copied, 0 on success. Quadwords, then bytes: for the small
// copies it serves (kTableCopyMax) that beats a `rep movsb`, whose start-up
// alone costs more there. The labelled instructions are the only ones that
// touch guest memory; at each of them RCX holds the bytes still to copy,
// which the fault exit returns. Why not sigsetjmp: saving the context costs
// more than an 8-byte copy, and the DMA hot path is mostly small copies.
asm(R"(
  .text
  .p2align 4
  .globl umdev_guest_copy
  .hidden umdev_guest_copy
  .type umdev_guest_copy, @function
umdev_guest_copy:
  .cfi_startproc
  mov %rdx, %rcx
1:
  cmp $8, %rcx
  jb 2f
  .globl umdev_guest_copy_qload
  .hidden umdev_guest_copy_qload
umdev_guest_copy_qload:
  mov (%rsi), %rax
  .globl umdev_guest_copy_qstore
  .hidden umdev_guest_copy_qstore
umdev_guest_copy_qstore:
  mov %rax, (%rdi)
  add $8, %rsi
  add $8, %rdi
  sub $8, %rcx
  jmp 1b
2:
  test %rcx, %rcx
  jz 3f
  .globl umdev_guest_copy_bload
  .hidden umdev_guest_copy_bload
umdev_guest_copy_bload:
  movb (%rsi), %al
  .globl umdev_guest_copy_bstore
  .hidden umdev_guest_copy_bstore
umdev_guest_copy_bstore:
  movb %al, (%rdi)
  inc %rsi
  inc %rdi
  dec %rcx
  jmp 2b
3:
  .globl umdev_guest_copy_fault
  .hidden umdev_guest_copy_fault
umdev_guest_copy_fault:
  mov %rcx, %rax
  ret
  .cfi_endproc
  .size umdev_guest_copy, .-umdev_guest_copy
)");

extern "C" {
size_t umdev_guest_copy(void* dst, const void* src, size_t size);
extern const char umdev_guest_copy_qload[], umdev_guest_copy_qstore[], umdev_guest_copy_bload[],
    umdev_guest_copy_bstore[], umdev_guest_copy_fault[];
}
#endif

namespace umdev {
namespace {

#if UMDEV_GUEST_COPY_TABLE
// Resumes a fault at one of umdev_guest_copy's listed instructions at its
// error exit; false for any other instruction.
bool ResumeGuestCopy(void* context) {
  auto& rip = static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_RIP];
  const auto at = static_cast<uintptr_t>(rip);
  for (const char* site : {umdev_guest_copy_qload, umdev_guest_copy_qstore,
                           umdev_guest_copy_bload, umdev_guest_copy_bstore}) {
    if (at == reinterpret_cast<uintptr_t>(site)) {
      rip = static_cast<greg_t>(reinterpret_cast<uintptr_t>(umdev_guest_copy_fault));
      return true;
    }
  }
  return false;
}
#endif

// Set only while this thread is inside a guarded copy. Volatile, with signal
// fences around the copy: the compiler knows memcpy does not read it and
// would otherwise drop the store before the copy as dead.
thread_local sigjmp_buf* volatile t_recovery = nullptr;
struct sigaction g_previous {};

void OnSigbus(int signo, siginfo_t* info, void* context) {
#if UMDEV_GUEST_COPY_TABLE
  if (ResumeGuestCopy(context)) return;
#endif
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

// Installed once; after that the copy's path pays one acquire load of a
// flag, inline (a function-local static's guard, or std::call_once, was a
// call per copy: an eighth of an 8-byte DmaRead's samples).
std::atomic<bool> g_installed{false};

[[gnu::noinline, gnu::cold]] void InstallHandlerOnce() {
  static const bool installed = [] {
    struct sigaction action {};
    action.sa_sigaction = OnSigbus;
    // SA_NODEFER: the handler leaves by siglongjmp without restoring the
    // signal mask, so SIGBUS must not be blocked while it runs.
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    return ::sigaction(SIGBUS, &action, &g_previous) == 0;
  }();
  (void)installed;
  g_installed.store(true, std::memory_order_release);
}

inline void InstallHandler() {
  if (!g_installed.load(std::memory_order_acquire)) [[unlikely]] InstallHandlerOnce();
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
#if UMDEV_GUEST_COPY_TABLE
  // Larger copies take the C library's memcpy (vector moves, non-temporal
  // stores for the largest), beside which sigsetjmp's cost is small.
  constexpr size_t kTableCopyMax = 256;
  if (size >= kTableCopyMax) {
    return Guarded([=] { std::memcpy(dst, src, size); }, src, size, "guest memory copy");
  }
  InstallHandler();
  if (const size_t left = umdev_guest_copy(dst, src, size); left != 0) [[unlikely]] {
    return Fail(EFAULT, fmt::format("guest memory copy of {:#x} bytes at {}: {:#x} bytes from "
                                    "the start, guest memory has no backing (the client "
                                    "truncated it)",
                                    size, src, size - left));
  }
  return {};
#else
  return Guarded([=] { std::memcpy(dst, src, size); }, src, size, "guest memory copy");
#endif
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
