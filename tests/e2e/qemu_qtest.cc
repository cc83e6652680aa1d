#include "qemu_qtest.h"

#include "e2e/harness_util.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstring>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

namespace umdev::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

using detail::DescribeStatus;
using detail::kQemuInRoot;
using detail::RemainingMs;

// Keeps each qtest line (hex doubles the size) far below what QEMU buffers comfortably.
constexpr size_t kMaxChunk = 32 * 1024;
// After QEMU closed its end, how long to wait for it to become reapable.
constexpr std::chrono::milliseconds kExitGrace{2000};


Result<uint64_t> ParseHexValue(std::string_view text) {
  if (text.starts_with("0x")) text.remove_prefix(2);
  uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    return Fail(EPROTO, fmt::format("qtest: '{}' is not a hex value", text));
  }
  return value;
}

int HexNibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<uint32_t> ConfigAddress(uint8_t slot, uint8_t function, uint8_t offset, int width) {
  if (slot >= 32 || function >= 8 || offset % width != 0) {
    return Fail(EINVAL, fmt::format("config access {:02x}.{} offset {:#x} width {}", slot, function,
                                    offset, width));
  }
  return 0x80000000u | (uint32_t{slot} << 11) | (uint32_t{function} << 8) | (offset & 0xfcu);
}

}  // namespace

std::optional<fs::path> QemuRootFromEnvironment() {
  const char* value = getenv("UMDEV_QEMU_ROOT");
  if (value == nullptr || *value == '\0') return std::nullopt;
  return fs::path(value);
}

Result<std::string> PathInsideRoot(const fs::path& root, const fs::path& host_path) {
  std::error_code ec;
  const fs::path canonical_root = fs::weakly_canonical(root, ec);
  if (ec) return Fail(ec.value(), fmt::format("resolve root {}", root.string()));
  const fs::path canonical_path = fs::weakly_canonical(host_path, ec);
  if (ec) return Fail(ec.value(), fmt::format("resolve {}", host_path.string()));
  const fs::path relative = canonical_path.lexically_relative(canonical_root);
  if (relative.empty() || relative == "." || *relative.begin() == "..") {
    return Fail(EINVAL,
                fmt::format("{} is not under the QEMU root {}", host_path.string(), root.string()));
  }
  return "/" + relative.string();
}

Result<RootScratchDir> RootScratchDir::Create(const fs::path& root) {
  std::string pattern = (root / "tmp" / "umdev-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) return FailErrno("mkdtemp " + pattern);
  return RootScratchDir(fs::path(pattern));
}

RootScratchDir::RootScratchDir(RootScratchDir&& other) noexcept
    : path_(std::exchange(other.path_, {})) {}

RootScratchDir& RootScratchDir::operator=(RootScratchDir&& other) noexcept {
  if (this != &other) {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
    path_ = std::exchange(other.path_, {});
  }
  return *this;
}

RootScratchDir::~RootScratchDir() {
  std::error_code ec;
  if (!path_.empty()) fs::remove_all(path_, ec);
}

Result<QemuQtest> QemuQtest::Start(QemuQtestOptions options) {
  if (options.root.empty()) return Fail(EINVAL, "QEMU root not given");
  if (access((options.root / "usr/bin/qemu-system-x86_64").c_str(), X_OK) != 0) {
    return FailErrno(
        fmt::format("no QEMU in {} (build it with scripts/qemu-root, or run "
                    "'make test')",
                    options.root.string()));
  }
  if (options.memory_mib == 0) return Fail(EINVAL, "QEMU memory size 0");

  QemuQtest qemu;
  qemu.command_timeout_ = options.command_timeout;
  std::vector<std::string>& argv = qemu.argv_;
  argv = {kQemuInRoot,   "-machine", "q35",  "-accel", "qtest",
          "-nodefaults", "-display", "none", "-m",     std::to_string(options.memory_mib)};
  if (options.shared_memory) {
    argv.insert(argv.end(),
                {"-object",
                 fmt::format("memory-backend-memfd,id=mem,size={}M,share=on", options.memory_mib),
                 "-machine", "memory-backend=mem"});
  }
  for (const VfioUserPciDevice& device : options.devices) {
    UMDEV_ASSIGN_OR_RETURN(std::string socket, PathInsideRoot(options.root, device.socket));
    nlohmann::json json = {{"driver", "vfio-user-pci"},
                           {"socket", {{"type", "unix"}, {"path", socket}}},
                           {"addr", device.addr}};
    if (!device.id.empty()) json["id"] = device.id;
    argv.insert(argv.end(), {"-device", json.dump()});
  }
  argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
  // Without -qtest-log QEMU echoes the whole conversation to stderr.
  argv.insert(argv.end(), {"-qtest", "stdio", "-qtest-log", "none"});

  // A socket pair rather than pipes: send() with MSG_NOSIGNAL cannot raise
  // SIGPIPE in the test when QEMU has died.
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return FailErrno("socketpair for qtest");
  }
  qemu.qtest_.Reset(pair[0]);
  UniqueFd child_end(pair[1]);
  if (fcntl(qemu.qtest_.get(), F_SETFL, O_NONBLOCK) != 0) return FailErrno("qtest O_NONBLOCK");
  qemu.stderr_.Reset(memfd_create("qemu-stderr", MFD_CLOEXEC));
  if (!qemu.stderr_) return FailErrno("memfd_create for QEMU stderr");

  // Everything the child touches is prepared before fork().
  std::vector<char*> child_argv;
  for (std::string& arg : argv) child_argv.push_back(arg.data());
  child_argv.push_back(nullptr);
  std::string path_env = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  std::string locale_env = "LC_ALL=C.UTF-8";
  char* child_env[] = {path_env.data(), locale_env.data(), nullptr};
  const std::string root = options.root.string();
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) return FailErrno("fork for QEMU");
  if (pid == 0) {
    // Only async-signal-safe calls from here on.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (dup2(child_end.get(), 0) < 0 || dup2(child_end.get(), 1) < 0 ||
        dup2(qemu.stderr_.get(), 2) < 0) {
      _exit(127);
    }
    close_range(3, UINT_MAX, 0);
    if (chroot(root.c_str()) != 0 || chdir("/") != 0) {
      static constexpr char kMessage[] = "qemu_qtest: chroot into the QEMU root failed\n";
      (void)!write(2, kMessage, sizeof(kMessage) - 1);
      _exit(127);
    }
    execve(kQemuInRoot, child_argv.data(), child_env);
    static constexpr char kMessage[] = "qemu_qtest: exec of qemu-system-x86_64 failed\n";
    (void)!write(2, kMessage, sizeof(kMessage) - 1);
    _exit(127);
  }
  qemu.pid_ = pid;
  child_end.Reset();
  qemu.pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!qemu.pidfd_) return FailErrno("pidfd_open for QEMU");

  // QEMU answers its first command only after every device has realized, so
  // this one reply covers the vfio-user handshakes too.
  const Clock::time_point deadline = Clock::now() + options.start_timeout;
  auto ready = qemu.SendLine("endianness", deadline);
  Result<std::string> reply = ready ? qemu.ReadReply(deadline) : std::unexpected(ready.error());
  if (!reply) return std::unexpected(Wrap(std::move(reply).error(), "start QEMU"));
  if (*reply != "OK little") {
    return Fail(EPROTO, fmt::format("start QEMU: unexpected first reply '{}'", *reply));
  }
  return qemu;
}

QemuQtest::QemuQtest(QemuQtest&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      qtest_(std::move(other.qtest_)),
      stderr_(std::move(other.stderr_)),
      pidfd_(std::move(other.pidfd_)),
      exit_status_(other.exit_status_),
      inbuf_(std::move(other.inbuf_)),
      irq_levels_(std::move(other.irq_levels_)),
      irq_raises_(std::move(other.irq_raises_)),
      command_timeout_(other.command_timeout_),
      argv_(std::move(other.argv_)) {}

QemuQtest& QemuQtest::operator=(QemuQtest&& other) noexcept {
  if (this != &other) {
    KillAndReap();
    pid_ = std::exchange(other.pid_, -1);
    qtest_ = std::move(other.qtest_);
    stderr_ = std::move(other.stderr_);
    pidfd_ = std::move(other.pidfd_);
    exit_status_ = other.exit_status_;
    inbuf_ = std::move(other.inbuf_);
    irq_levels_ = std::move(other.irq_levels_);
    irq_raises_ = std::move(other.irq_raises_);
    command_timeout_ = other.command_timeout_;
    argv_ = std::move(other.argv_);
  }
  return *this;
}

QemuQtest::~QemuQtest() { KillAndReap(); }

void QemuQtest::KillAndReap() {
  if (pid_ <= 0 || exit_status_) return;
  kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_status_ = status;
}

Result<void> QemuQtest::SendLine(std::string_view line, Clock::time_point deadline) {
  if (line.find('\n') != std::string_view::npos) {
    return Fail(EINVAL, "qtest command contains a newline");
  }
  std::string data = std::string(line) + "\n";
  std::string_view rest = data;
  while (!rest.empty()) {
    const ssize_t sent = send(qtest_.get(), rest.data(), rest.size(), MSG_NOSIGNAL);
    if (sent > 0) {
      rest.remove_prefix(static_cast<size_t>(sent));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) {
      return std::unexpected(Dead(EPIPE, "QEMU closed the qtest stream"));
    }
    if (errno != EAGAIN) return FailErrno("send to QEMU");
    pollfd pfd{qtest_.get(), POLLOUT, 0};
    const int ready = poll(&pfd, 1, RemainingMs(deadline));
    if (ready < 0 && errno != EINTR) return FailErrno("poll QEMU for writing");
    if (ready == 0) {
      return std::unexpected(Dead(ETIMEDOUT, fmt::format("QEMU took no input for '{}'", line)));
    }
  }
  return {};
}

Result<std::string> QemuQtest::ReadLine(Clock::time_point deadline) {
  for (;;) {
    if (const size_t newline = inbuf_.find('\n'); newline != std::string::npos) {
      std::string line = inbuf_.substr(0, newline);
      inbuf_.erase(0, newline + 1);
      return line;
    }
    char buffer[4096];
    const ssize_t got = recv(qtest_.get(), buffer, sizeof(buffer), 0);
    if (got > 0) {
      inbuf_.append(buffer, static_cast<size_t>(got));
      continue;
    }
    if (got == 0 || errno == ECONNRESET) {
      return std::unexpected(Dead(EPIPE, "QEMU closed the qtest stream"));
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return FailErrno("recv from QEMU");
    pollfd pfd{qtest_.get(), POLLIN, 0};
    const int ready = poll(&pfd, 1, RemainingMs(deadline));
    if (ready < 0 && errno != EINTR) return FailErrno("poll QEMU for reading");
    if (ready == 0) return std::unexpected(Dead(ETIMEDOUT, "no line from QEMU in time"));
  }
}

bool QemuQtest::TakeAsyncLine(const std::string& line) {
  int irq = 0;
  std::string_view number;
  bool raised = false;
  if (line.starts_with("IRQ raise ")) {
    number = std::string_view(line).substr(10);
    raised = true;
  } else if (line.starts_with("IRQ lower ")) {
    number = std::string_view(line).substr(10);
  } else {
    return false;
  }
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), irq);
  if (ec != std::errc() || end != number.data() + number.size()) return false;
  irq_levels_[irq] = raised;
  if (raised) ++irq_raises_[irq];
  return true;
}

Result<std::string> QemuQtest::ReadReply(Clock::time_point deadline) {
  for (;;) {
    UMDEV_ASSIGN_OR_RETURN(std::string line, ReadLine(deadline));
    if (!TakeAsyncLine(line)) return line;
  }
}

Result<std::string> QemuQtest::Command(std::string_view line) {
  if (pid_ <= 0) return Fail(EBADF, "QEMU not started");
  const Clock::time_point deadline = Clock::now() + command_timeout_;
  UMDEV_TRY(SendLine(line, deadline));
  auto reply = ReadReply(deadline);
  if (!reply)
    return std::unexpected(Wrap(std::move(reply).error(), fmt::format("qtest '{}'", line)));
  if (*reply == "OK") return std::string();
  if (reply->starts_with("OK ")) return reply->substr(3);
  if (reply->starts_with("FAIL") || reply->starts_with("ERR")) {
    return Fail(EIO, fmt::format("qtest '{}': {}", line, *reply));
  }
  return Fail(EPROTO, fmt::format("qtest '{}': unexpected reply '{}'", line, *reply));
}

Result<uint64_t> QemuQtest::CommandValue(std::string_view line) {
  UMDEV_ASSIGN_OR_RETURN(std::string value, Command(line));
  auto parsed = ParseHexValue(value);
  if (!parsed) return std::unexpected(Wrap(std::move(parsed).error(), line));
  return *parsed;
}

Error QemuQtest::Dead(int code, std::string_view what) {
  if (!exit_status_ && pidfd_) {
    pollfd pfd{pidfd_.get(), POLLIN, 0};
    // A closed stream means QEMU is on its way out; a timeout means it may be
    // alive, so only look, do not wait.
    const int grace = code == EPIPE ? static_cast<int>(kExitGrace.count()) : 0;
    if (poll(&pfd, 1, grace) > 0) {
      int status = 0;
      if (waitpid(pid_, &status, 0) == pid_) exit_status_ = status;
    }
  }
  const std::string state =
      exit_status_ ? "QEMU " + DescribeStatus(*exit_status_) : std::string("QEMU still running");
  return Error{code, fmt::format("{}; {}; stderr: {}", what, state, StderrTail(2048))};
}

Result<void> QemuQtest::Outb(uint16_t port, uint8_t value) {
  UMDEV_TRY(Command(fmt::format("outb {:#x} {:#x}", port, value)));
  return {};
}
Result<void> QemuQtest::Outw(uint16_t port, uint16_t value) {
  UMDEV_TRY(Command(fmt::format("outw {:#x} {:#x}", port, value)));
  return {};
}
Result<void> QemuQtest::Outl(uint16_t port, uint32_t value) {
  UMDEV_TRY(Command(fmt::format("outl {:#x} {:#x}", port, value)));
  return {};
}
Result<uint8_t> QemuQtest::Inb(uint16_t port) {
  UMDEV_ASSIGN_OR_RETURN(uint64_t value, CommandValue(fmt::format("inb {:#x}", port)));
  return static_cast<uint8_t>(value);
}
Result<uint16_t> QemuQtest::Inw(uint16_t port) {
  UMDEV_ASSIGN_OR_RETURN(uint64_t value, CommandValue(fmt::format("inw {:#x}", port)));
  return static_cast<uint16_t>(value);
}
Result<uint32_t> QemuQtest::Inl(uint16_t port) {
  UMDEV_ASSIGN_OR_RETURN(uint64_t value, CommandValue(fmt::format("inl {:#x}", port)));
  return static_cast<uint32_t>(value);
}

Result<void> QemuQtest::Writeb(uint64_t addr, uint8_t value) {
  UMDEV_TRY(Command(fmt::format("writeb {:#x} {:#x}", addr, value)));
  return {};
}
Result<void> QemuQtest::Writew(uint64_t addr, uint16_t value) {
  UMDEV_TRY(Command(fmt::format("writew {:#x} {:#x}", addr, value)));
  return {};
}
Result<void> QemuQtest::Writel(uint64_t addr, uint32_t value) {
  UMDEV_TRY(Command(fmt::format("writel {:#x} {:#x}", addr, value)));
  return {};
}
Result<void> QemuQtest::Writeq(uint64_t addr, uint64_t value) {
  UMDEV_TRY(Command(fmt::format("writeq {:#x} {:#x}", addr, value)));
  return {};
}
Result<uint8_t> QemuQtest::Readb(uint64_t addr) {
  UMDEV_ASSIGN_OR_RETURN(uint64_t value, CommandValue(fmt::format("readb {:#x}", addr)));
  return static_cast<uint8_t>(value);
}
Result<uint16_t> QemuQtest::Readw(uint64_t addr) {
  UMDEV_ASSIGN_OR_RETURN(uint64_t value, CommandValue(fmt::format("readw {:#x}", addr)));
  return static_cast<uint16_t>(value);
}
Result<uint32_t> QemuQtest::Readl(uint64_t addr) {
  UMDEV_ASSIGN_OR_RETURN(uint64_t value, CommandValue(fmt::format("readl {:#x}", addr)));
  return static_cast<uint32_t>(value);
}
Result<uint64_t> QemuQtest::Readq(uint64_t addr) {
  return CommandValue(fmt::format("readq {:#x}", addr));
}

Result<std::vector<uint8_t>> QemuQtest::MemRead(uint64_t addr, size_t size) {
  // QEMU asserts on "read ADDR 0".
  if (size == 0) return Fail(EINVAL, "MemRead of 0 bytes");
  std::vector<uint8_t> bytes;
  bytes.reserve(size);
  while (bytes.size() < size) {
    const size_t chunk = std::min(kMaxChunk, size - bytes.size());
    const uint64_t at = addr + bytes.size();
    UMDEV_ASSIGN_OR_RETURN(std::string hex, Command(fmt::format("read {:#x} {:#x}", at, chunk)));
    if (!hex.starts_with("0x") || hex.size() != 2 + 2 * chunk) {
      return Fail(EPROTO,
                  fmt::format("read {:#x} {:#x}: reply of {} characters", at, chunk, hex.size()));
    }
    for (size_t i = 2; i < hex.size(); i += 2) {
      const int high = HexNibble(hex[i]);
      const int low = HexNibble(hex[i + 1]);
      if (high < 0 || low < 0) return Fail(EPROTO, fmt::format("read {:#x}: bad hex", at));
      bytes.push_back(static_cast<uint8_t>(high << 4 | low));
    }
  }
  return bytes;
}

Result<void> QemuQtest::MemWrite(uint64_t addr, std::span<const uint8_t> bytes) {
  for (size_t done = 0; done < bytes.size();) {
    const size_t chunk = std::min(kMaxChunk, bytes.size() - done);
    std::string line = fmt::format("write {:#x} {:#x} 0x", addr + done, chunk);
    for (const uint8_t byte : bytes.subspan(done, chunk))
      fmt::format_to(std::back_inserter(line), "{:02x}", byte);
    UMDEV_TRY(Command(line));
    done += chunk;
  }
  return {};
}

Result<uint8_t> QemuQtest::ConfigRead8(uint8_t slot, uint8_t function, uint8_t offset) {
  UMDEV_ASSIGN_OR_RETURN(uint32_t address, ConfigAddress(slot, function, offset, 1));
  UMDEV_TRY(Outl(0xcf8, address));
  return Inb(static_cast<uint16_t>(0xcfc + (offset & 3)));
}
Result<uint16_t> QemuQtest::ConfigRead16(uint8_t slot, uint8_t function, uint8_t offset) {
  UMDEV_ASSIGN_OR_RETURN(uint32_t address, ConfigAddress(slot, function, offset, 2));
  UMDEV_TRY(Outl(0xcf8, address));
  return Inw(static_cast<uint16_t>(0xcfc + (offset & 2)));
}
Result<uint32_t> QemuQtest::ConfigRead32(uint8_t slot, uint8_t function, uint8_t offset) {
  UMDEV_ASSIGN_OR_RETURN(uint32_t address, ConfigAddress(slot, function, offset, 4));
  UMDEV_TRY(Outl(0xcf8, address));
  return Inl(0xcfc);
}
Result<void> QemuQtest::ConfigWrite8(uint8_t slot, uint8_t function, uint8_t offset,
                                     uint8_t value) {
  UMDEV_ASSIGN_OR_RETURN(uint32_t address, ConfigAddress(slot, function, offset, 1));
  UMDEV_TRY(Outl(0xcf8, address));
  return Outb(static_cast<uint16_t>(0xcfc + (offset & 3)), value);
}
Result<void> QemuQtest::ConfigWrite16(uint8_t slot, uint8_t function, uint8_t offset,
                                      uint16_t value) {
  UMDEV_ASSIGN_OR_RETURN(uint32_t address, ConfigAddress(slot, function, offset, 2));
  UMDEV_TRY(Outl(0xcf8, address));
  return Outw(static_cast<uint16_t>(0xcfc + (offset & 2)), value);
}
Result<void> QemuQtest::ConfigWrite32(uint8_t slot, uint8_t function, uint8_t offset,
                                      uint32_t value) {
  UMDEV_ASSIGN_OR_RETURN(uint32_t address, ConfigAddress(slot, function, offset, 4));
  UMDEV_TRY(Outl(0xcf8, address));
  return Outl(0xcfc, value);
}

Result<void> QemuQtest::IrqInterceptIn(std::string_view qom_path) {
  if (qom_path.empty() || qom_path.find(' ') != std::string_view::npos) {
    return Fail(EINVAL, fmt::format("QOM path '{}'", qom_path));
  }
  UMDEV_TRY(Command(fmt::format("irq_intercept_in {}", qom_path)));
  return {};
}

Result<void> QemuQtest::WaitIrq(int line, bool raised, std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return Fail(EBADF, "QEMU not started");
  const Clock::time_point deadline = Clock::now() + timeout;
  while (IrqLevel(line) != raised) {
    auto next = ReadLine(deadline);
    if (!next) {
      return std::unexpected(
          Wrap(std::move(next).error(),
               fmt::format("wait for IRQ {} to go {}", line, raised ? "high" : "low")));
    }
    if (!TakeAsyncLine(*next)) {
      return Fail(EPROTO, fmt::format("unexpected line '{}' while no command was pending", *next));
    }
  }
  return {};
}

bool QemuQtest::IrqLevel(int line) const {
  const auto it = irq_levels_.find(line);
  return it != irq_levels_.end() && it->second;
}

int QemuQtest::IrqRaiseCount(int line) const {
  const auto it = irq_raises_.find(line);
  return it == irq_raises_.end() ? 0 : it->second;
}

Result<int64_t> QemuQtest::ClockStep(std::optional<int64_t> ns) {
  UMDEV_ASSIGN_OR_RETURN(std::string value,
                         Command(ns ? fmt::format("clock_step {}", *ns) : "clock_step"));
  int64_t now = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), now);
  if (ec != std::errc() || end != value.data() + value.size()) {
    return Fail(EPROTO, fmt::format("clock_step: reply '{}'", value));
  }
  return now;
}

Result<void> QemuQtest::Kill(int signal) {
  if (pid_ <= 0 || exit_status_) return Fail(ESRCH, "QEMU is not running");
  if (kill(pid_, signal) != 0) return FailErrno(fmt::format("kill QEMU with signal {}", signal));
  return {};
}

Result<int> QemuQtest::WaitExit(std::chrono::milliseconds timeout) {
  if (exit_status_) return *exit_status_;
  if (pid_ <= 0) return Fail(ESRCH, "QEMU not started");
  pollfd pfd{pidfd_.get(), POLLIN, 0};
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    const int ready = poll(&pfd, 1, RemainingMs(deadline));
    if (ready > 0) break;
    if (ready == 0) {
      return Fail(ETIMEDOUT,
                  fmt::format("QEMU (pid {}) still running after {} ms", pid_, timeout.count()));
    }
    if (errno != EINTR) return FailErrno("poll QEMU's pidfd");
  }
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) return FailErrno("waitpid QEMU");
  }
  exit_status_ = status;
  return status;
}

Result<int> QemuQtest::Quit(std::chrono::milliseconds timeout) {
  if (exit_status_) return *exit_status_;
  UMDEV_TRY(Kill(SIGTERM));
  if (auto status = WaitExit(timeout)) return *status;
  UMDEV_TRY(Kill(SIGKILL));
  return WaitExit(timeout);
}

std::string QemuQtest::StderrTail(size_t max_bytes) const {
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
