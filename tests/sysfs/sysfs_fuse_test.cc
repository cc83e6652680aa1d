// The sysfs tree of a real umdevd (--sysfs-mount), driven by plain shell as
// users drive /sys: cat, echo >, ls -l, readlink; and its unmount at exit.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "e2e/umdevd_process.h"
#include "umdev/common/unique_fd.h"

namespace umdev::test {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr std::string_view kUuid = "0b4dd2a2-0e7b-4c7c-9b1e-5b2f0c3e8a11";
constexpr const char* kConfig =
    R"({"parents":[{"driver":"test","max_instances":3,"attributes":true}]})";

struct ShellResult {
  int status = -1;  // The exit code; -1 if it did not exit normally.
  std::string output;
};

std::string Quote(std::string_view text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// bash, not sh: dash's echo reports every failed write as "I/O error",
// where bash prints strerror() of the write's errno.
ShellResult Bash(const std::string& script) {
  FILE* pipe = ::popen(("bash -c " + Quote(script) + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {};
  ShellResult result;
  std::array<char, 4096> chunk{};
  for (size_t n; (n = std::fread(chunk.data(), 1, chunk.size(), pipe)) > 0;) {
    result.output.append(chunk.data(), n);
  }
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

bool IsMounted(const std::filesystem::path& path) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  for (std::string line; std::getline(mountinfo, line);) {
    std::istringstream fields(line);
    std::string id, parent, device, root, mountpoint;
    fields >> id >> parent >> device >> root >> mountpoint;
    if (mountpoint == path.string()) return true;
  }
  return false;
}

int CountLines(const std::string& text, std::string_view line) {
  std::istringstream lines(text);
  int count = 0;
  for (std::string each; std::getline(lines, each);) count += each == line ? 1 : 0;
  return count;
}

// Whether |pid| exits within |bound|, without reaping it.
bool ExitsWithin(pid_t pid, std::chrono::milliseconds bound) {
  for (auto waited = 0ms; waited < bound; waited += 10ms) {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
        info.si_pid == pid) {
      return true;
    }
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

class SysfsFuseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    UniqueFd fuse(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
    if (!fuse) {
      GTEST_SKIP() << "FUSE is not usable here: open /dev/fuse: " << std::strerror(errno);
    }
    std::string pattern = (std::filesystem::temp_directory_path() / "umdev-sysfs-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    sys_ = dir_ / "sys";
    auto started = UmdevdProcess::Start(UMDEVD_TESTBED, dir_, kConfig,
                                        {"--sysfs-mount", sys_.string()});
    ASSERT_TRUE(started.has_value()) << started.error().context;
    daemon_.emplace(std::move(*started));
    ASSERT_TRUE(IsMounted(sys_)) << daemon_->Log();
  }

  void TearDown() override {
    if (holder_ > 0) {
      ::kill(holder_, SIGKILL);
      ::waitpid(holder_, nullptr, 0);
    }
    daemon_.reset();
    std::error_code ignored;
    if (!dir_.empty() && !IsMounted(sys_)) std::filesystem::remove_all(dir_, ignored);
  }

  // Runs |script| in bash with $S set to the mount point and $T to type A.
  ShellResult Sh(const std::string& script) {
    return Bash("S=" + Quote(sys_.string()) +
                "; T=$S/class/mdev_bus/test_parent/mdev_supported_types/test-a; " + script);
  }

  // A process that keeps the mount busy: its cwd is inside, and it holds an
  // attribute open.
  void StartHolder() {
    const std::filesystem::path held =
        sys_ / "class/mdev_bus/test_parent/mdev_supported_types/test-a/name";
    holder_ = ::fork();
    ASSERT_GE(holder_, 0);
    if (holder_ == 0) {
      const std::string script = "cd " + Quote((sys_ / "devices").string()) + " && exec 3<" +
                                 Quote(held.string()) + " && exec sleep 600";
      ::execl("/bin/bash", "bash", "-c", script.c_str(), nullptr);
      ::_exit(127);
    }
    // Wait until it sits in the mount and holds the file open (reading the
    // links in /proc does not enter FUSE).
    const std::string proc = "/proc/" + std::to_string(holder_);
    for (int i = 0; i < 1000; ++i) {
      std::error_code cwd_error, fd_error;
      // fd 3 names the file by its resolved path (class/mdev_bus is a link).
      if (std::filesystem::read_symlink(proc + "/cwd", cwd_error) == sys_ / "devices" &&
          std::filesystem::read_symlink(proc + "/fd/3", fd_error).string().starts_with(
              sys_.string() + "/")) {
        return;
      }
      std::this_thread::sleep_for(10ms);
    }
    FAIL() << "the holder never entered the mount and opened " << held;
  }

  std::filesystem::path dir_;
  std::filesystem::path sys_;
  std::optional<UmdevdProcess> daemon_;
  pid_t holder_ = -1;
};

TEST_F(SysfsFuseTest, CatAndLsShowTheTypesAsSysfsDoes) {
  EXPECT_EQ(Sh("ls $S; ls $S/class/mdev_bus").output, "bus\nclass\ndevices\nkernel\ntest_parent\n");
  EXPECT_EQ(Sh("cat $T/name $T/available_instances $T/device_api $T/description").output,
            "Type A\n3\nvfio-pci\nfirst test type\n");
  EXPECT_EQ(Sh("cd $T && ls -l | awk 'NR > 1 { print $1, $NF }'").output,
            "-r--r--r-- available_instances\n"
            "--w------- create\n"
            "-r--r--r-- description\n"
            "-r--r--r-- device_api\n"
            "drwxr-xr-x devices\n"
            "-r--r--r-- name\n");
  EXPECT_EQ(Sh("readlink $S/class/mdev_bus/test_parent").output,
            "../../devices/virtual/umdev/test_parent\n");
}

TEST_F(SysfsFuseTest, EchoUuidIntoCreateAndOneIntoRemove) {
  const std::string uuid(kUuid);
  ASSERT_EQ(Sh("echo " + uuid + " > $T/create").status, 0);
  EXPECT_EQ(Sh("cat $T/available_instances").output, "2\n");
  EXPECT_EQ(Sh("ls $S/bus/mdev/devices; ls $T/devices").output, uuid + "\n" + uuid + "\n");
  EXPECT_EQ(Sh("readlink $S/bus/mdev/devices/" + uuid).output,
            "../../../devices/virtual/umdev/test_parent/" + uuid + "\n");
  // What mdevctl derives: the type and the parent from canonical paths.
  EXPECT_EQ(Sh("basename $(readlink -f $S/bus/mdev/devices/" + uuid + "/mdev_type)").output,
            "test-a\n");
  EXPECT_EQ(Sh("basename $(readlink -f $S/bus/mdev/devices/" + uuid + "/..)").output,
            "test_parent\n");
  const std::string dev = "$S/bus/mdev/devices/" + uuid;
  EXPECT_EQ(Sh("cat " + dev + "/vfio_user_socket").output, daemon_->SocketOf(uuid).string() + "\n");
  EXPECT_TRUE(std::filesystem::exists(daemon_->SocketOf(uuid)));
  EXPECT_EQ(Sh("cd " + dev + "/ && ls -l remove uevent label serial | awk '{ print $1, $NF }'").output,
            "-rw-r--r-- label\n--w------- remove\n-r--r--r-- serial\n-rw-r--r-- uevent\n");
  EXPECT_EQ(Sh("echo blue > " + dev + "/label && cat " + dev + "/label").output, "blue\n");
  ASSERT_EQ(Sh("echo 1 > " + dev + "/remove").status, 0);
  EXPECT_EQ(Sh("test -e " + dev).status, 1);
  EXPECT_EQ(Sh("ls $S/bus/mdev/devices; cat $T/available_instances").output, "3\n");
}

TEST_F(SysfsFuseTest, FailedWritesReportTheKernelsErrno) {
  const std::string uuid(kUuid);
  EXPECT_THAT(Sh("echo bad > $T/create").output, HasSubstr("Invalid argument"));
  ASSERT_EQ(Sh("echo " + uuid + " > $T/create").status, 0);
  EXPECT_THAT(Sh("echo " + uuid + " > $T/create").output, HasSubstr("File exists"));
  ASSERT_EQ(Sh("cat /proc/sys/kernel/random/uuid > $T/create").status, 0);
  ASSERT_EQ(Sh("cat /proc/sys/kernel/random/uuid > $T/create").status, 0);
  const ShellResult full = Sh("cat /proc/sys/kernel/random/uuid > $T/create");
  EXPECT_NE(full.status, 0);
  EXPECT_THAT(full.output, HasSubstr("Too many users"));  // EUSERS.
  const std::string dev = "$S/bus/mdev/devices/" + uuid;
  EXPECT_THAT(Sh("echo yes > " + dev + "/remove").output, HasSubstr("Invalid argument"));
  EXPECT_THAT(Sh("echo bad > " + dev + "/label").output, HasSubstr("Invalid argument"));
  EXPECT_THAT(Sh("echo bogus > " + dev + "/uevent").output, HasSubstr("Invalid argument"));
  // kernfs refuses the open itself, to root too.
  EXPECT_THAT(Sh("echo 1 > $T/name").output, HasSubstr("Permission denied"));
  EXPECT_THAT(Sh("cat $T/create").output, HasSubstr("Permission denied"));
  EXPECT_THAT(Sh("cat " + dev + "/secret").output, HasSubstr("Permission denied"));
  EXPECT_THAT(Sh("cat $S/bus/mdev/devices/11111111-2222-4333-8444-555555555555/remove").output,
              HasSubstr("No such file or directory"));
  EXPECT_EQ(Sh("ls $S/bus/mdev/devices | wc -l").output, "3\n");
}

TEST_F(SysfsFuseTest, ConcurrentCreatesRaceForTheLastInstances) {
  const std::string race =
      "for i in $(seq 8); do"
      "  (cat /proc/sys/kernel/random/uuid > $T/create 2>/dev/null && echo created || echo refused) &"
      " done; wait";
  const ShellResult first = Sh(race);
  EXPECT_EQ(CountLines(first.output, "created"), 3) << first.output;
  EXPECT_EQ(CountLines(first.output, "refused"), 5) << first.output;
  EXPECT_EQ(Sh("ls $S/bus/mdev/devices | wc -l; cat $T/available_instances").output, "3\n0\n");
  // Free one, then eight writers race for it.
  ASSERT_EQ(Sh("echo 1 > $S/bus/mdev/devices/$(ls $S/bus/mdev/devices | head -1)/remove").status, 0);
  const ShellResult second = Sh(race);
  EXPECT_EQ(CountLines(second.output, "created"), 1) << second.output;
  EXPECT_EQ(CountLines(second.output, "refused"), 7) << second.output;
  EXPECT_EQ(Sh("ls $S/bus/mdev/devices | wc -l").output, "3\n");
}

TEST_F(SysfsFuseTest, SigtermUnmountsEvenWhileTheMountIsBusy) {
  ASSERT_EQ(Sh("echo " + std::string(kUuid) + " > $T/create").status, 0);
  StartHolder();
  ASSERT_EQ(::kill(daemon_->pid(), SIGTERM), 0);
  ASSERT_TRUE(ExitsWithin(daemon_->pid(), 20s)) << daemon_->Log();
  const int status = daemon_->Stop();  // Reaps it.
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(IsMounted(sys_));
  // What the holder still has is cut off, not hung.
  EXPECT_THAT(Bash("cat /proc/" + std::to_string(holder_) + "/fd/3").output,
              HasSubstr("Transport endpoint is not connected"));
}

TEST_F(SysfsFuseTest, LazyUnmountFromOutsideDoesNotHangShutdown) {
  StartHolder();
  ASSERT_EQ(Sh("fusermount3 -uz $S 2>/dev/null || umount -l $S").status, 0);
  EXPECT_FALSE(IsMounted(sys_));
  ASSERT_EQ(::kill(daemon_->pid(), SIGTERM), 0);
  ASSERT_TRUE(ExitsWithin(daemon_->pid(), 20s)) << daemon_->Log();
  const int status = daemon_->Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
}  // namespace umdev::test
