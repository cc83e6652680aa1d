// QemuGuest: boot, console capture and teardown; the root's kernel and an
// initramfs built with the root's own tools.
#include "e2e/qemu_guest.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <fstream>
#include <utility>

#include "e2e/harness_util.h"
#include "e2e/qemu_qtest.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

using detail::DescribeStatus;
using detail::kQemuInRoot;
using detail::RemainingMs;

// Forks a child chrooted into |root| running |argv| with stdin on |in_fd|,
// stdout on |out_fd| and stderr on |err_fd|; it dies with the test.
Result<pid_t> SpawnInRoot(const fs::path& root, std::vector<std::string> argv, int in_fd,
                          int out_fd, int err_fd) {
  std::vector<char*> child_argv;
  for (std::string& arg : argv) child_argv.push_back(arg.data());
  child_argv.push_back(nullptr);
  std::string path_env = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  std::string locale_env = "LC_ALL=C.UTF-8";
  char* child_env[] = {path_env.data(), locale_env.data(), nullptr};
  const std::string root_text = root.string();
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) return FailErrno("fork");
  if (pid == 0) {
    // Only async-signal-safe calls from here on.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(127);
    close_range(3, UINT_MAX, 0);
    if (chroot(root_text.c_str()) != 0 || chdir("/") != 0) {
      static constexpr char kMessage[] = "qemu_guest: chroot into the root failed\n";
      (void)!write(2, kMessage, sizeof(kMessage) - 1);
      _exit(127);
    }
    execve(child_argv[0], child_argv.data(), child_env);
    static constexpr char kMessage[] = "qemu_guest: exec failed\n";
    (void)!write(2, kMessage, sizeof(kMessage) - 1);
    _exit(127);
  }
  return pid;
}

std::string ReadAll(int fd) {
  std::string text;
  char buffer[4096];
  for (off_t at = 0;;) {
    const ssize_t got = pread(fd, buffer, sizeof(buffer), at);
    if (got <= 0) break;
    text.append(buffer, static_cast<size_t>(got));
    at += got;
  }
  return text;
}

}  // namespace

Result<fs::path> FindRootKernel(const fs::path& root) {
  std::vector<fs::path> kernels;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root / "boot", ec)) {
    if (entry.path().filename().string().starts_with("vmlinuz-")) kernels.push_back(entry.path());
  }
  if (kernels.empty()) {
    return Fail(ENOENT, fmt::format("no {}/boot/vmlinuz-* (linux-image-amd64)", root.string()));
  }
  std::sort(kernels.begin(), kernels.end());
  return kernels.back();
}

Result<RootCommandResult> RunInRootWithStatus(const fs::path& root,
                                              const std::vector<std::string>& argv) {
  if (argv.empty()) return Fail(EINVAL, "RunInRoot: no command");
  UniqueFd output(memfd_create("root-command-output", MFD_CLOEXEC));
  if (!output) return FailErrno("memfd_create");
  UniqueFd null(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null) return FailErrno("open /dev/null");
  UMDEV_ASSIGN_OR_RETURN(const pid_t pid,
                         SpawnInRoot(root, argv, null.get(), output.get(), output.get()));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return FailErrno("waitpid");
  }
  RootCommandResult result;
  result.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.output = ReadAll(output.get());
  return result;
}

Result<std::string> RunInRoot(const fs::path& root, const std::vector<std::string>& argv) {
  UMDEV_ASSIGN_OR_RETURN(RootCommandResult result, RunInRootWithStatus(root, argv));
  if (result.exit_status != 0) {
    return Fail(EIO, fmt::format("{} in the root exited with status {}: {}", argv[0],
                                 result.exit_status, result.output));
  }
  return std::move(result.output);
}

Result<fs::path> BuildBusyboxInitramfs(const fs::path& root, const fs::path& dir,
                                       std::string_view init_script,
                                       const std::vector<InitramfsFile>& files) {
  const fs::path tree = dir / "initramfs";
  std::error_code ec;
  for (const char* sub : {"bin", "dev", "proc", "sys", "tmp"}) {
    fs::create_directories(tree / sub, ec);
    if (ec) return Fail(ec.value(), fmt::format("mkdir {}", (tree / sub).string()));
  }
  fs::copy_file(root / "bin/busybox", tree / "bin/busybox", fs::copy_options::overwrite_existing,
                ec);
  if (ec) return Fail(ec.value(), "copy the root's busybox (busybox-static)");
  {
    std::ofstream init(tree / "init", std::ios::trunc);
    init << init_script;
    if (!init) return Fail(EIO, "write " + (tree / "init").string());
  }
  fs::permissions(tree / "init",
                  fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                      fs::perms::others_read | fs::perms::others_exec,
                  ec);
  if (ec) return Fail(ec.value(), "chmod /init");
  for (const InitramfsFile& file : files) {
    const fs::path target = tree / fs::path(file.destination).relative_path();
    fs::create_directories(target.parent_path(), ec);
    if (!ec) fs::copy_file(file.source, target, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return Fail(ec.value(), fmt::format("copy {} to the initramfs' {}", file.source.string(),
                                          file.destination));
    }
  }
  UMDEV_ASSIGN_OR_RETURN(const std::string tree_in_root, PathInsideRoot(root, tree));
  const std::string archive_in_root = tree_in_root + ".cpio";
  // The file list comes from the root's find so that every tool is the root's.
  UMDEV_TRY(RunInRoot(root, {"/bin/sh", "-c",
                             fmt::format("cd '{}' && find . | cpio --quiet -o -H newc > '{}'",
                                         tree_in_root, archive_in_root)}));
  return dir / "initramfs.cpio";
}

Result<QemuGuest> QemuGuest::Start(const fs::path& root, std::vector<std::string> args) {
  if (access((root / "usr/bin/qemu-system-x86_64").c_str(), X_OK) != 0) {
    return FailErrno(fmt::format("no QEMU in {}", root.string()));
  }
  QemuGuest guest;
  guest.argv_ = {kQemuInRoot};
  guest.argv_.insert(guest.argv_.end(), args.begin(), args.end());
  // A socket pair: the console is both QEMU's stdin and stdout, and a send to
  // a dead QEMU cannot raise SIGPIPE.
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return FailErrno("socketpair for the console");
  }
  guest.console_fd_.Reset(pair[0]);
  UniqueFd child_end(pair[1]);
  if (fcntl(guest.console_fd_.get(), F_SETFL, O_NONBLOCK) != 0) return FailErrno("O_NONBLOCK");
  guest.stderr_.Reset(memfd_create("qemu-stderr", MFD_CLOEXEC));
  if (!guest.stderr_) return FailErrno("memfd_create for QEMU stderr");
  UMDEV_ASSIGN_OR_RETURN(guest.pid_, SpawnInRoot(root, guest.argv_, child_end.get(),
                                                 child_end.get(), guest.stderr_.get()));
  guest.pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, guest.pid_, 0)));
  if (!guest.pidfd_) return FailErrno("pidfd_open QEMU");
  return guest;
}

QemuGuest::QemuGuest(QemuGuest&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      console_fd_(std::move(other.console_fd_)),
      stderr_(std::move(other.stderr_)),
      pidfd_(std::move(other.pidfd_)),
      exit_status_(std::exchange(other.exit_status_, std::nullopt)),
      console_closed_(other.console_closed_),
      console_(std::move(other.console_)),
      argv_(std::move(other.argv_)) {}

QemuGuest& QemuGuest::operator=(QemuGuest&& other) noexcept {
  if (this != &other) {
    KillAndReap();
    pid_ = std::exchange(other.pid_, -1);
    console_fd_ = std::move(other.console_fd_);
    stderr_ = std::move(other.stderr_);
    pidfd_ = std::move(other.pidfd_);
    exit_status_ = std::exchange(other.exit_status_, std::nullopt);
    console_closed_ = other.console_closed_;
    console_ = std::move(other.console_);
    argv_ = std::move(other.argv_);
  }
  return *this;
}

QemuGuest::~QemuGuest() { KillAndReap(); }

void QemuGuest::KillAndReap() {
  if (pid_ > 0 && !exit_status_) {
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    exit_status_ = status;
  }
}

Result<bool> QemuGuest::Pump(int wait_ms) {
  if (console_closed_) return false;
  pollfd pfd{console_fd_.get(), POLLIN, 0};
  const int ready = poll(&pfd, 1, wait_ms);
  if (ready < 0 && errno != EINTR) return FailErrno("poll the console");
  if (ready <= 0) return true;
  for (;;) {
    char buffer[4096];
    const ssize_t got = recv(console_fd_.get(), buffer, sizeof(buffer), 0);
    if (got > 0) {
      for (ssize_t i = 0; i < got; ++i) {
        if (buffer[i] != '\r') console_.push_back(buffer[i]);
      }
      continue;
    }
    if (got == 0 || errno == ECONNRESET) {
      console_closed_ = true;
      return false;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return true;
    return FailErrno("read the console");
  }
}

Result<std::string> QemuGuest::WaitForLineFrom(size_t from, std::string_view needle,
                                               std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    for (size_t start = from, end; (end = console_.find('\n', start)) != std::string::npos;
         start = end + 1) {
      const std::string_view line(console_.data() + start, end - start);
      if (line.find(needle) != std::string_view::npos) return std::string(line);
    }
    if (Clock::now() >= deadline) {
      return std::unexpected(Describe(
          ETIMEDOUT, fmt::format("no console line with '{}' in {} ms", needle, timeout.count())));
    }
    UMDEV_ASSIGN_OR_RETURN(const bool open, Pump(RemainingMs(deadline)));
    if (!open) {
      return std::unexpected(
          Describe(EPIPE, fmt::format("console closed before a line with '{}'", needle)));
    }
  }
}

Result<void> QemuGuest::Send(std::string_view text) {
  while (!text.empty()) {
    const ssize_t sent = send(console_fd_.get(), text.data(), text.size(), MSG_NOSIGNAL);
    if (sent > 0) {
      text.remove_prefix(static_cast<size_t>(sent));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) {
      return std::unexpected(Describe(EPIPE, "QEMU closed its stdin"));
    }
    if (errno != EAGAIN) return FailErrno("write to QEMU's stdin");
    // Reading keeps QEMU from blocking on its output while we wait to write.
    UMDEV_TRY(Pump(10));
  }
  return {};
}

Result<int> QemuGuest::WaitExit(std::chrono::milliseconds timeout) {
  if (exit_status_) return *exit_status_;
  if (pid_ <= 0) return Fail(ESRCH, "QEMU not started");
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    pollfd pfd{pidfd_.get(), POLLIN, 0};
    if (poll(&pfd, 1, 0) > 0) break;
    if (Clock::now() >= deadline) {
      return Fail(ETIMEDOUT,
                  fmt::format("QEMU (pid {}) still running after {} ms", pid_, timeout.count()));
    }
    // Keeps draining the console so that QEMU never blocks writing to it.
    UMDEV_ASSIGN_OR_RETURN(const bool open, Pump(std::min(RemainingMs(deadline), 50)));
    if (!open) {
      pfd.revents = 0;
      if (poll(&pfd, 1, RemainingMs(deadline)) <= 0) continue;
      break;
    }
  }
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) return FailErrno("waitpid QEMU");
  }
  exit_status_ = status;
  (void)Pump(0);
  return status;
}

Error QemuGuest::Describe(int code, std::string_view what) {
  if (!exit_status_ && pidfd_) {
    pollfd pfd{pidfd_.get(), POLLIN, 0};
    if (poll(&pfd, 1, code == EPIPE ? 2000 : 0) > 0) {
      int status = 0;
      if (waitpid(pid_, &status, 0) == pid_) exit_status_ = status;
    }
  }
  const std::string state =
      exit_status_ ? "QEMU " + DescribeStatus(*exit_status_) : std::string("QEMU still running");
  return Error{code, fmt::format("{}; {}; stderr: {}", what, state, StderrTail(2048))};
}

std::string QemuGuest::StderrTail(size_t max_bytes) const {
  struct stat st {};
  if (!stderr_ || fstat(stderr_.get(), &st) != 0 || st.st_size <= 0) return {};
  const size_t size = static_cast<size_t>(st.st_size);
  const size_t length = std::min(size, max_bytes);
  std::string tail(length, '\0');
  const ssize_t got = pread(stderr_.get(), tail.data(), length, static_cast<off_t>(size - length));
  tail.resize(got > 0 ? static_cast<size_t>(got) : 0);
  return tail;
}

}  // namespace umdev::test
