// QemuGuest: a real Linux guest booted by QEMU (TCG) from the cached Debian
// trixie root, its serial console captured; plus the pieces a boot needs (the
// root's kernel, an initramfs made from the root's busybox-static and cpio).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"

namespace umdev::test {

// The kernel linux-image-amd64 installed: ROOT/boot/vmlinuz-* (the newest by
// name when several). ENOENT when there is none.
Result<std::filesystem::path> FindRootKernel(const std::filesystem::path& root);

// Runs |argv| (argv[0] a path inside |root|) chrooted into |root|, with stdin
// /dev/null and stdout+stderr captured; returns the output. Errors: EIO a
// non-zero exit (the output is in the context).
Result<std::string> RunInRoot(const std::filesystem::path& root,
                              const std::vector<std::string>& argv);

struct RootCommandResult {
  int exit_status = 0;  // The exit code, or 128 + the signal that killed it.
  std::string output;   // stdout and stderr, interleaved as written.
};
// RunInRoot for commands whose failures are the point: any exit is a result.
// Errors: only the harness's own (fork, memfd, wait).
Result<RootCommandResult> RunInRootWithStatus(const std::filesystem::path& root,
                                              const std::vector<std::string>& argv);

// A file an initramfs carries besides busybox and /init.
struct InitramfsFile {
  std::filesystem::path source;  // A host path.
  std::string destination;       // Absolute, inside the initramfs.
};

// Builds DIR/initramfs.cpio (newc, made by the root's cpio) holding the
// root's static busybox as /bin/busybox, |init_script| as /init and
// |files|; |dir| must be under |root|. Returns the archive's host path.
Result<std::filesystem::path> BuildBusyboxInitramfs(const std::filesystem::path& root,
                                                    const std::filesystem::path& dir,
                                                    std::string_view init_script,
                                                    const std::vector<InitramfsFile>& files = {});

// |programs| (host binaries) as /bin/NAME, with every shared library ldd
// lists for them, the dynamic loader included, at its host path: the
// project's programs run in the guest as they do here. Errors: EIO ldd
// failed or a library was not found.
Result<std::vector<InitramfsFile>> HostProgramFiles(
    const std::vector<std::filesystem::path>& programs);

// The root kernel's modules |names| (as modprobe names them) with the
// modules they depend on (modules.dep), decompressed into |dir| and
// carried as /modules/NN-NAME.ko, NN the order to load them in. Errors:
// ENOENT a module the kernel does not have; EIO xz failed.
Result<std::vector<InitramfsFile>> RootKernelModules(const std::filesystem::path& root,
                                                     const std::filesystem::path& dir,
                                                     const std::vector<std::string>& names);

// One QEMU process chrooted into the root, started with exactly |args| after
// the binary name; its stdin/stdout (the console with -serial stdio) are a
// socket the harness reads. Not thread-safe: one test thread.
class QemuGuest {
 public:
  static Result<QemuGuest> Start(const std::filesystem::path& root, std::vector<std::string> args);

  QemuGuest(QemuGuest&& other) noexcept;
  QemuGuest& operator=(QemuGuest&& other) noexcept;
  QemuGuest(const QemuGuest&) = delete;
  QemuGuest& operator=(const QemuGuest&) = delete;
  ~QemuGuest();  // SIGKILLs QEMU if still running and reaps it

  // Reads the console until a line containing |needle| is complete and returns
  // it (without CR LF); lines already read count. Errors: ETIMEDOUT none in
  // |timeout|; EPIPE QEMU closed the console first (exit status and stderr in
  // the context).
  Result<std::string> WaitForLine(std::string_view needle, std::chrono::milliseconds timeout) {
    return WaitForLineFrom(0, needle, timeout);
  }
  // The same over the lines that start at or after byte |from| of console().
  Result<std::string> WaitForLineFrom(size_t from, std::string_view needle,
                                      std::chrono::milliseconds timeout);
  // Writes |text| to QEMU's stdin (the console, or the monitor with -monitor
  // stdio). EPIPE once QEMU closed it.
  Result<void> Send(std::string_view text);
  // Reaps QEMU (reading the console meanwhile); returns the wait status.
  // ETIMEDOUT if it is still running after |timeout|.
  Result<int> WaitExit(std::chrono::milliseconds timeout);

  // Everything the console printed so far, CR LF turned into LF.
  const std::string& console() const { return console_; }
  std::string StderrTail(size_t max_bytes = 4096) const;
  const std::vector<std::string>& argv() const { return argv_; }
  pid_t pid() const { return pid_; }

 private:
  QemuGuest() = default;
  // Reads what the console has (waiting up to |wait_ms|); false once it closed.
  Result<bool> Pump(int wait_ms);
  Error Describe(int code, std::string_view what);
  void KillAndReap();

  pid_t pid_ = -1;
  UniqueFd console_fd_;  // our end of QEMU's stdin/stdout
  UniqueFd stderr_;      // memfd QEMU's stderr is appended to
  UniqueFd pidfd_;
  std::optional<int> exit_status_;
  bool console_closed_ = false;
  std::string console_;
  std::vector<std::string> argv_;
};

}  // namespace umdev::test
