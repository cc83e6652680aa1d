// A real Linux guest (Debian trixie's kernel under QEMU TCG, a busybox
// initramfs) drives two mtty devices served by a real umdevd over vfio-user:
// the kernel's 8250_pci binds both as 16550A, a message goes round the
// loopback port, and another crosses the host-PTY port to the test and back.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "e2e/qemu_guest.h"
#include "e2e/qemu_qtest.h"
#include "e2e/umdevd_process.h"
#include "umdev/common/unique_fd.h"
#include "umdev/common/uuid.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kLoopbackMessage = "umdev-loopback-0123456789-the-quick-brown-fox";
constexpr const char* kGuestToHost = "umdev-guest-to-host-over-pty";
constexpr const char* kHostToGuest = "umdev-host-to-guest-over-pty";
constexpr const char* kVerdict = "UMDEV-E2E:";
// TCG on two busy cores: the boot alone is a few seconds; this bounds a hang.
constexpr std::chrono::seconds kGuestTimeout{120};

// The guest's /init. The loopback device sits at 00:04.0 and the PTY one at
// 00:05.0; each port is held open on a descriptor for the whole exchange, so
// the driver does not shut the UART down (and drop its FIFO) between steps.
std::string InitScript() {
  return fmt::format(R"SH(#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
verdict() {{ echo "{verdict} $*"; poweroff -f; }}
port_at() {{ dmesg | sed -n "s/.*$1: \(ttyS[0-9]*\) at I\/O .* is a 16550A.*/\1/p" | head -n 1; }}
# Polls (up to 30 s) until file $1 holds string $2.
wait_for() {{
  i=0
  while [ $i -lt 300 ]; do
    grep -q "$2" "$1" 2>/dev/null && return 0
    usleep 100000
    i=$((i + 1))
  done
  return 1
}}
LB=$(port_at 0000:00:04.0)
PT=$(port_at 0000:00:05.0)
[ -n "$LB" ] && [ -n "$PT" ] || verdict "FAIL no 16550A: $(dmesg | grep -e ttyS -e 8250 | tr '\n' '|')"
echo "guest: loopback port $LB, pty port $PT"
dmesg | grep -e '0000:00:04.0: ttyS' -e '0000:00:05.0: ttyS' | sed 's/^/guest dmesg: /'

exec 3<>/dev/$LB
stty raw -echo 115200 <&3 || verdict "FAIL stty $LB"
cat <&3 >/tmp/loopback &
LB_CAT=$!
printf '%s' '{loopback}' >&3
wait_for /tmp/loopback '{loopback}' || verdict "FAIL loopback read back '$(cat /tmp/loopback)'"
kill $LB_CAT

exec 4<>/dev/$PT
stty raw -echo 115200 <&4 || verdict "FAIL stty $PT"
cat <&4 >/tmp/pty &
PT_CAT=$!
printf '%s\n' '{to_host}' >&4
wait_for /tmp/pty '{to_guest}' || verdict "FAIL pty reply '$(cat /tmp/pty)'"
kill $PT_CAT
# The bytes moved on interrupts (INTx through QEMU), not by polling.
irqs_of() {{ grep -w "$1" /proc/interrupts | awk '{{print $2}}'; }}
LB_IRQS=$(irqs_of $LB)
PT_IRQS=$(irqs_of $PT)
[ "${{LB_IRQS:-0}}" -gt 0 ] && [ "${{PT_IRQS:-0}}" -gt 0 ] || verdict "FAIL no interrupts: $(cat /proc/interrupts | tr '\n' '|')"
verdict "PASS loopback=$LB pty=$PT interrupts=$LB_IRQS,$PT_IRQS"
)SH",
                     fmt::arg("verdict", kVerdict), fmt::arg("loopback", kLoopbackMessage),
                     fmt::arg("to_host", kGuestToHost), fmt::arg("to_guest", kHostToGuest));
}

// The host side of the PTY port, on its own thread: reads until the guest's
// message arrives, then answers it.
class PtyPeer {
 public:
  explicit PtyPeer(UniqueFd fd) : fd_(std::move(fd)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~PtyPeer() { Finish(); }
  // Stops the thread and returns what the guest sent.
  std::string Finish() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return received_;
  }

 private:
  void Run() {
    const Clock::time_point deadline = Clock::now() + kGuestTimeout;
    while (!stop_ && Clock::now() < deadline) {
      pollfd pfd{fd_.get(), POLLIN, 0};
      if (poll(&pfd, 1, 50) <= 0) continue;
      char buffer[256];
      const ssize_t got = read(fd_.get(), buffer, sizeof(buffer));
      if (got <= 0) continue;
      received_.append(buffer, static_cast<size_t>(got));
      if (!answered_ && received_.find(kGuestToHost) != std::string::npos) {
        const std::string reply = std::string(kHostToGuest) + "\n";
        answered_ =
            write(fd_.get(), reply.data(), reply.size()) == static_cast<ssize_t>(reply.size());
      }
    }
  }

  UniqueFd fd_;
  std::atomic<bool> stop_{false};
  bool answered_ = false;
  std::string received_;
  std::thread thread_;
};

class MttyLinuxGuestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto root = QemuRootFromEnvironment();
    if (!root) {
      GTEST_SKIP() << "UMDEV_QEMU_ROOT is not set: run 'make test', which builds the QEMU "
                      "root (scripts/qemu-root) and points the tests at it";
    }
    root_ = *root;
    auto scratch = RootScratchDir::Create(root_);
    ASSERT_TRUE(scratch.has_value()) << scratch.error().Describe();
    scratch_.emplace(std::move(*scratch));
    // The real daemon with the mtty parent; its sockets live inside the root.
    auto daemon =
        UmdevdProcess::Start(UMDEVD, scratch_->path(), R"({"parents":[{"driver":"mtty"}]})");
    ASSERT_TRUE(daemon.has_value()) << daemon.error().Describe();
    daemon_.emplace(std::move(*daemon));
  }

  void TearDown() override {
    if (daemon_ && HasFailure()) std::cerr << "umdevd log:\n" << daemon_->Log();
    daemon_.reset();
    scratch_.reset();
  }

  std::string StartMtty(const std::string& extra) {
    const std::string uuid = Uuid::Generate().ToString();
    auto out = daemon_->Ctl(UMDEVCTL, "start -p mtty -t mtty-1 -u " + uuid + extra);
    EXPECT_TRUE(out.has_value()) << out.error().Describe();
    return uuid;
  }

  static std::string DeviceJson(const std::string& socket_in_root, const std::string& addr) {
    return nlohmann::json{{"driver", "vfio-user-pci"},
                          {"socket", {{"type", "unix"}, {"path", socket_in_root}}},
                          {"addr", addr}}
        .dump();
  }

  fs::path root_;
  std::optional<RootScratchDir> scratch_;
  std::optional<UmdevdProcess> daemon_;
};

TEST_F(MttyLinuxGuestTest, LinuxBindsTheUartAndMovesBytesThroughLoopbackAndPty) {
  const std::string loopback = StartMtty("");
  const std::string pty = StartMtty(" --attr far_end=pty");
  auto pty_path = daemon_->Ctl(UMDEVCTL, "attr -u " + pty + " -n pty");
  ASSERT_TRUE(pty_path.has_value()) << pty_path.error().Describe();
  while (!pty_path->empty() && pty_path->back() == '\n') pty_path->pop_back();
  ASSERT_TRUE(pty_path->starts_with("/dev/pts/")) << *pty_path;
  UniqueFd host_end(open(pty_path->c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
  ASSERT_TRUE(host_end) << "open " << *pty_path << ": " << strerror(errno);
  termios tio{};
  ASSERT_EQ(tcgetattr(host_end.get(), &tio), 0);
  cfmakeraw(&tio);
  ASSERT_EQ(tcsetattr(host_end.get(), TCSANOW, &tio), 0);

  auto kernel = FindRootKernel(root_);
  ASSERT_TRUE(kernel.has_value()) << kernel.error().Describe();
  auto initramfs = BuildBusyboxInitramfs(root_, scratch_->path(), InitScript());
  ASSERT_TRUE(initramfs.has_value()) << initramfs.error().Describe();
  auto kernel_in_root = PathInsideRoot(root_, *kernel);
  auto initramfs_in_root = PathInsideRoot(root_, *initramfs);
  auto loopback_socket = PathInsideRoot(root_, daemon_->SocketOf(loopback));
  auto pty_socket = PathInsideRoot(root_, daemon_->SocketOf(pty));
  ASSERT_TRUE(kernel_in_root && initramfs_in_root && loopback_socket && pty_socket);

  const Clock::time_point started = Clock::now();
  // clang-format off
  const std::vector<std::string> args = {
      "-machine", "q35", "-accel", "tcg", "-m", "512", "-smp", "1", "-nodefaults",
      "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
      "-object", "memory-backend-memfd,id=mem,size=512M,share=on",
      "-machine", "memory-backend=mem",
      "-kernel", *kernel_in_root, "-initrd", *initramfs_in_root,
      "-append", "console=ttyS0 quiet 8250.nr_uarts=8 panic=-1",
      "-device", DeviceJson(*loopback_socket, "04.0"),
      "-device", DeviceJson(*pty_socket, "05.0")};
  // clang-format on
  auto guest = QemuGuest::Start(root_, args);
  ASSERT_TRUE(guest.has_value()) << guest.error().Describe();
  PtyPeer peer(std::move(host_end));
  {
    auto verdict = guest->WaitForLine(kVerdict, kGuestTimeout);
    ASSERT_TRUE(verdict.has_value()) << verdict.error().Describe() << "\nconsole:\n"
                                     << guest->console();
    EXPECT_NE(verdict->find("PASS"), std::string::npos) << "console:\n" << guest->console();
    // 8250_pci's own words about both functions.
    for (const char* function : {"0000:00:04.0: ttyS", "0000:00:05.0: ttyS"}) {
      auto bound = guest->WaitForLine(function, std::chrono::seconds(0));
      ASSERT_TRUE(bound.has_value()) << "console:\n" << guest->console();
      EXPECT_NE(bound->find("is a 16550A"), std::string::npos) << *bound;
    }
    auto status = guest->WaitExit(std::chrono::seconds(30));
    ASSERT_TRUE(status.has_value()) << status.error().Describe();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
  }
  EXPECT_NE(peer.Finish().find(kGuestToHost), std::string::npos);
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  std::cout << "guest console:\n"
            << guest->console() << "guest boot and check took " << seconds << " s\n";
  RecordProperty("guest_seconds", std::to_string(seconds));
}

}  // namespace
}  // namespace umdev::test
