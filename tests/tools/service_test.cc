// umdevd as a system service: the sd_notify protocol against a socket the
// test holds (READY=1 only once serving, STOPPING=1, a failed start's
// STATUS and ERRNO), SIGHUP leaving it running, the installed layout, and
// the unit checked by systemd-analyze.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "e2e/umdevd_process.h"
#include "umdev/common/unique_fd.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int serial = 0;
    dir_ = fs::temp_directory_path() /
           ("usv-" + std::to_string(::getpid()) + "-" + std::to_string(serial++));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "config.json")
        << R"({"parents":[{"driver":"test","name":"parent0"},{"driver":"test","name":"parent1"}]})";
    notify_ = UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string path = (dir_ / "notify").string();
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::bind(notify_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }

  void TearDown() override {
    for (pid_t pid : {daemon_, second_}) {
      if (pid <= 0) continue;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    fs::remove_all(dir_);
  }

  // umdevd (the testbed build) with NOTIFY_SOCKET set, as systemd runs it.
  pid_t Start() {
    const std::string state = (dir_ / "state").string();
    const std::string config = (dir_ / "config.json").string();
    const std::string env = "NOTIFY_SOCKET=" + (dir_ / "notify").string();
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::putenv(const_cast<char*>(env.c_str()));
      ::execl(UMDEVD_TESTBED, UMDEVD_TESTBED, "--state-dir", state.c_str(), "--config",
              config.c_str(), "--log-level", "warn", nullptr);
      ::_exit(127);
    }
    return pid;
  }

  // The next notification datagram, or "" after |timeout|.
  std::string NextNotification(std::chrono::milliseconds timeout = 10s) {
    pollfd ready{notify_.get(), POLLIN, 0};
    if (::poll(&ready, 1, static_cast<int>(timeout.count())) != 1) return "";
    char buffer[4096];
    const ssize_t got = ::recv(notify_.get(), buffer, sizeof(buffer), 0);
    return got > 0 ? std::string(buffer, static_cast<size_t>(got)) : "";
  }

  std::string Ctl(const std::string& args) const {
    return RunShell(std::string(UMDEVCTL) + " --state-dir " + (dir_ / "state").string() + " " +
                    args + " 2>&1")
        .out;
  }

  fs::path dir_;
  UniqueFd notify_;
  pid_t daemon_ = -1;
  pid_t second_ = -1;
};

TEST_F(ServiceTest, ReadyOnlyOnceTheControlSocketAndEveryParentAreUp) {
  daemon_ = Start();
  const std::string ready = NextNotification();
  ASSERT_NE(ready.find("READY=1"), std::string::npos) << ready;
  EXPECT_NE(ready.find("MAINPID=" + std::to_string(daemon_)), std::string::npos) << ready;
  EXPECT_NE(ready.find("STATUS=serving"), std::string::npos) << ready;
  // At READY=1 a client may rely on everything: no waiting, no retries.
  EXPECT_TRUE(fs::exists(dir_ / "state" / "control.sock"));
  const std::string types = Ctl("types");
  EXPECT_NE(types.find("parent0\n"), std::string::npos) << types;
  EXPECT_NE(types.find("parent1\n"), std::string::npos) << types;
}

TEST_F(ServiceTest, SighupKeepsServingAndSigtermSaysStopping) {
  daemon_ = Start();
  ASSERT_NE(NextNotification().find("READY=1"), std::string::npos);
  ASSERT_EQ(::kill(daemon_, SIGHUP), 0);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(::waitpid(daemon_, nullptr, WNOHANG), 0) << "SIGHUP ended the daemon";
  EXPECT_NE(Ctl("types").find("parent0"), std::string::npos);
  ASSERT_EQ(::kill(daemon_, SIGTERM), 0);
  EXPECT_NE(NextNotification().find("STOPPING=1"), std::string::npos);
  int status = 0;
  ASSERT_EQ(::waitpid(daemon_, &status, 0), daemon_);
  daemon_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST_F(ServiceTest, AFailedStartReportsItsErrorAndNeverReady) {
  daemon_ = Start();
  ASSERT_NE(NextNotification().find("READY=1"), std::string::npos);
  second_ = Start();  // The same state dir: its lock is taken.
  const std::string failed = NextNotification();
  EXPECT_NE(failed.find("STATUS=failed"), std::string::npos) << failed;
  EXPECT_NE(failed.find("ERRNO="), std::string::npos) << failed;
  EXPECT_EQ(failed.find("READY=1"), std::string::npos) << failed;
  int status = 0;
  ASSERT_EQ(::waitpid(second_, &status, 0), second_);
  second_ = -1;
  EXPECT_NE(WEXITSTATUS(status), 0);
}

// `cmake --install` into a staging root: FHS places, the default
// configuration valid, the unit pointing at the installed daemon and clean
// under systemd-analyze, and nothing named like mdevctl's files.
TEST(InstallTest, TheInstalledTreeIsCompleteAndTheUnitVerifies) {
  const fs::path stage = fs::temp_directory_path() / ("uinst-" + std::to_string(::getpid()));
  fs::remove_all(stage);
  const ShellOutput installed = RunShell("DESTDIR=" + stage.string() + " cmake --install " +
                                         std::string(UMDEV_BUILD_DIR) + " 2>&1");
  ASSERT_EQ(installed.status, 0) << installed.out;
  const fs::path prefix = stage / fs::path(UMDEV_INSTALL_PREFIX).relative_path();
  const fs::path sysconf = stage / fs::path(UMDEV_INSTALL_SYSCONFDIR).relative_path();
  for (const fs::path& file :
       {prefix / "sbin/umdevd", prefix / "bin/umdevctl", prefix / "bin/umdev-probe",
        prefix / "sbin/umdev-device-plugin", prefix / "share/man/man8/umdev-device-plugin.8.gz",
        prefix / "share/doc/umdev/kubernetes.md", prefix / "share/doc/umdev/kubernetes/daemonset.yaml",
        sysconf / "umdev/umdevd.json", prefix / "lib/systemd/system/umdevd.service",
        prefix / "share/doc/umdev/kvm.md", prefix / "share/doc/umdev/service.md",
        prefix / "share/man/man8/umdevd.8.gz", prefix / "share/man/man8/umdevctl.8.gz",
        prefix / "share/man/man1/umdev-probe.1.gz", prefix / "share/doc/umdev/copyright",
        prefix / "share/doc/umdev/changelog.gz",
        prefix / "share/bash-completion/completions/umdevctl"}) {
    EXPECT_TRUE(fs::exists(file)) << file;
  }
  for (const auto& entry : fs::recursive_directory_iterator(stage)) {
    EXPECT_NE(entry.path().filename(), "lsmdev") << "collides with the mdevctl package";
  }
  // The man pages render, and say what they document.
  const ShellOutput page = RunShell("MANWIDTH=80 man -l " +
                                    (prefix / "share/man/man8/umdevd.8.gz").string() + " 2>&1");
  EXPECT_NE(page.out.find("--definitions-dir"), std::string::npos) << page.out;
  // The completion offers umdevctl's commands and a command's options.
  const std::string completion = (prefix / "share/bash-completion/completions/umdevctl").string();
  const auto complete = [&](const std::string& words, int cword) {
    return RunShell("bash -c 'source " + completion + "; COMP_WORDS=(" + words +
                    "); COMP_CWORD=" + std::to_string(cword) +
                    "; _umdevctl; echo \"${COMPREPLY[*]}\"'")
        .out;
  };
  EXPECT_EQ(complete("umdevctl q", 1), "qemu-args\n");
  EXPECT_EQ(complete("umdevctl li", 1), "list libvirt-xml\n");
  EXPECT_EQ(complete("umdevctl libvirt-xml U --v", 3), "--vcpus --virt-type\n");
  EXPECT_EQ(complete("umdevctl top -", 2), "-d --delay -n --iterations -b --batch -h --help\n");
  EXPECT_EQ(complete("umdevctl attr --n", 2), "--name\n");
  EXPECT_EQ(complete("umdevctl pa", 1), "passthrough\n");
  EXPECT_EQ(complete("umdevctl passthrough b", 2), "bind\n");
  EXPECT_EQ(complete("umdevctl list -d --dump", 3), "--dumpjson\n");
  const std::string daemon = (prefix / "sbin/umdevd").string();
  EXPECT_EQ(RunShell(daemon + " --version").out, "umdevd 0.1.0\n");
  // The shipped configuration is what a daemon starts with.
  const fs::path state = stage / "run";
  const ShellOutput started =
      RunShell("timeout --preserve-status -s INT 2 " + daemon + " --state-dir " + state.string() + " --config " +
               (sysconf / "umdev/umdevd.json").string() + " 2>&1; echo status=$?");
  EXPECT_NE(started.out.find("registered parent mtty"), std::string::npos) << started.out;
  EXPECT_NE(started.out.find("status=0"), std::string::npos) << started.out;
  // The unit as installed, with ExecStart pointing into the staging root.
  std::ifstream unit_in(prefix / "lib/systemd/system/umdevd.service");
  std::stringstream unit;
  unit << unit_in.rdbuf();
  const std::string exec = "ExecStart=" + std::string(UMDEV_INSTALL_PREFIX) + "/sbin/umdevd ";
  const size_t at = unit.str().find(exec);
  ASSERT_NE(at, std::string::npos) << unit.str();
  std::string staged = unit.str();
  staged.replace(at, exec.size(), "ExecStart=" + daemon + " ");
  const fs::path check = stage / "check";
  fs::create_directories(check);
  std::ofstream(check / "umdevd.service") << staged;
  const ShellOutput verified =
      RunShell("systemd-analyze verify --man=no " + (check / "umdevd.service").string() + " 2>&1");
  EXPECT_EQ(verified.status, 0) << verified.out;
  EXPECT_EQ(verified.out, "") << "systemd-analyze has remarks";
  fs::remove_all(stage);
}

}  // namespace
}  // namespace umdev::test
