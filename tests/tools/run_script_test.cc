// scripts/run (what `make run` starts): a real umdevd with the embedded
// configuration, one mtty-1 instance, the QEMU command that attaches it, and
// a clean stop on SIGTERM or Ctrl-C.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "e2e/qemu_guest.h"
#include "e2e/qemu_qtest.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The text after |prefix| on the first line that starts with it (after
// leading blanks), or "".
// The words of a shell command line; single quotes group (no escapes).
std::vector<std::string> ShellWords(const std::string& line) {
  std::vector<std::string> words;
  std::string word;
  bool quoted = false, any = false;
  for (const char c : line) {
    if (c == '\'') {
      quoted = !quoted;
      any = true;
    } else if (c == ' ' && !quoted) {
      if (any) words.push_back(word);
      word.clear();
      any = false;
    } else {
      word += c;
      any = true;
    }
  }
  if (any) words.push_back(word);
  return words;
}

std::string LineValue(const std::string& text, const std::string& prefix) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const size_t start = line.find_first_not_of(' ');
    if (start != std::string::npos && line.compare(start, prefix.size(), prefix) == 0) {
      return line.substr(start + prefix.size());
    }
  }
  return "";
}

class RunScriptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/urun-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }

  void TearDown() override {
    if (pid_ > 0) {
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) close(out_fd_);
    if (HasFailure()) std::cerr << "output:\n" << output_ << "stderr:\n" << ReadFile(dir_ / "err");
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Starts the script in its own process group (as a shell's foreground job
  // is) with stdout on a pipe; reads until it asks for Ctrl-C.
  void StartAndWaitForTheCommand(const fs::path& state_dir = {}) {
    int out[2];
    ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
    const std::string err = (dir_ / "err").string();
    const std::string state = (state_dir.empty() ? dir_ / "state" : state_dir).string();
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      setpgid(0, 0);
      dup2(out[1], STDOUT_FILENO);
      const int err_fd = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(err_fd, STDERR_FILENO);
      setenv("UMDEV_BIN_DIR", UMDEV_BIN_DIR, 1);
      execl("/bin/bash", "bash", RUN_SCRIPT, "--state-dir", state.c_str(), nullptr);
      _exit(127);
    }
    setpgid(pid_, pid_);
    close(out[1]);
    const Clock::time_point deadline = Clock::now() + 30s;
    while (output_.find("Ctrl-C stops the daemon.") == std::string::npos) {
      ASSERT_LT(Clock::now(), deadline) << "no QEMU command in time";
      pollfd pfd{out[0], POLLIN, 0};
      if (poll(&pfd, 1, 100) <= 0) continue;
      char buffer[4096];
      const ssize_t got = read(out[0], buffer, sizeof(buffer));
      ASSERT_GT(got, 0) << "the script ended early";
      output_.append(buffer, static_cast<size_t>(got));
    }
    out_fd_ = out[0];
  }

  // Reads what the script and the daemon wrote since, without waiting.
  void Drain() {
    for (;;) {
      pollfd pfd{out_fd_, POLLIN, 0};
      if (out_fd_ < 0 || poll(&pfd, 1, 0) <= 0) return;
      char buffer[4096];
      const ssize_t got = read(out_fd_, buffer, sizeof(buffer));
      if (got <= 0) return;
      output_.append(buffer, static_cast<size_t>(got));
    }
  }

  // Waits (bounded) for the script to exit; returns its wait status.
  int WaitForExit() {
    int status = -1;
    for (int i = 0; i < 1000; ++i) {
      Drain();  // The daemon's log shares the pipe; it must not fill up.
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        Drain();
        pid_ = -1;
        return status;
      }
      std::this_thread::sleep_for(10ms);
    }
    ADD_FAILURE() << "scripts/run still running 10 s after the signal";
    return -1;
  }

  void CheckTheAttachCommand() {
    const std::string socket = LineValue(output_, "Its vfio-user socket: ");
    ASSERT_TRUE(socket.ends_with(".sock")) << output_;
    struct stat st {};
    ASSERT_EQ(stat(socket.c_str(), &st), 0) << socket;
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    const std::string command = LineValue(output_, "qemu-system-x86_64 ");
    EXPECT_NE(command.find("-object memory-backend-memfd,id=mem,size=1G,share=on "
                           "-machine memory-backend=mem"),
              std::string::npos)
        << command;
    const size_t json_at = command.find("-device '");
    ASSERT_NE(json_at, std::string::npos) << command;
    const std::string json_text = command.substr(json_at + 9, command.rfind('\'') - (json_at + 9));
    const auto device = nlohmann::json::parse(json_text, nullptr, false);
    ASSERT_FALSE(device.is_discarded()) << json_text;
    EXPECT_EQ(device["driver"], "vfio-user-pci");
    EXPECT_EQ(device["socket"]["type"], "unix");
    EXPECT_EQ(device["socket"]["path"], socket);
    // The socket serves the mtty identity.
    std::string info;
    FILE* probe = popen((std::string(UMDEV_PROBE) + " --socket " + socket + " info").c_str(), "r");
    ASSERT_NE(probe, nullptr);
    std::array<char, 4096> chunk{};
    for (size_t n; (n = fread(chunk.data(), 1, chunk.size(), probe)) > 0;)
      info.append(chunk.data(), n);
    EXPECT_EQ(pclose(probe), 0) << info;
    EXPECT_NE(info.find("[4348:3253]"), std::string::npos) << info;
  }

  pid_t DaemonPid() const {
    const std::string text = LineValue(output_, "umdevd is running (pid ");
    return text.empty() ? -1 : static_cast<pid_t>(std::stol(text));
  }

  fs::path dir_;
  pid_t pid_ = -1;
  int out_fd_ = -1;  // the script's stdout (the daemon's log too)
  std::string output_;
};

TEST_F(RunScriptTest, PrintsTheQemuCommandAndStopsCleanlyOnSigterm) {
  ASSERT_NO_FATAL_FAILURE(StartAndWaitForTheCommand());
  ASSERT_NO_FATAL_FAILURE(CheckTheAttachCommand());
  const pid_t daemon = DaemonPid();
  ASSERT_GT(daemon, 0) << output_;
  ASSERT_EQ(kill(pid_, SIGTERM), 0);
  const int status = WaitForExit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
  // The script reaped the daemon before it exited.
  EXPECT_NE(kill(daemon, 0), 0);
  EXPECT_NE((output_ + ReadFile(dir_ / "err")).find("umdevd: stopped"), std::string::npos);
}

TEST_F(RunScriptTest, CtrlCToTheWholeJobStopsTheDaemon) {
  ASSERT_NO_FATAL_FAILURE(StartAndWaitForTheCommand());
  const pid_t daemon = DaemonPid();
  ASSERT_GT(daemon, 0) << output_;
  // What a terminal does on Ctrl-C: SIGINT to every process of the job.
  ASSERT_EQ(kill(-pid_, SIGINT), 0);
  const int status = WaitForExit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
  EXPECT_NE(kill(daemon, 0), 0);
}

// The printed command, run as printed (with the socket path as the chrooted
// QEMU sees it), attaches the instance: QEMU's monitor lists the mtty function.
TEST_F(RunScriptTest, ThePrintedCommandAttachesTheInstanceToQemu) {
  const auto root = umdev::test::QemuRootFromEnvironment();
  if (!root) GTEST_SKIP() << "UMDEV_QEMU_ROOT is not set: run 'make test'";
  auto scratch = umdev::test::RootScratchDir::Create(*root);
  ASSERT_TRUE(scratch.has_value()) << scratch.error().Describe();
  ASSERT_NO_FATAL_FAILURE(StartAndWaitForTheCommand(scratch->path() / "state"));
  const std::string socket = LineValue(output_, "Its vfio-user socket: ");
  auto socket_in_root = umdev::test::PathInsideRoot(*root, socket);
  ASSERT_TRUE(socket_in_root.has_value()) << socket_in_root.error().Describe();
  std::vector<std::string> args = ShellWords(LineValue(output_, "qemu-system-x86_64 "));
  ASSERT_FALSE(args.empty()) << output_;
  for (std::string& arg : args) {
    if (const size_t at = arg.find(socket); at != std::string::npos) {
      arg.replace(at, socket.size(), *socket_in_root);
    }
  }
  // Paused before the guest runs: the device is realized (the vfio-user
  // handshake is done) and the monitor answers on stdio.
  args.insert(args.end(), {"-S", "-display", "none", "-serial", "none", "-monitor", "stdio"});
  auto qemu = umdev::test::QemuGuest::Start(*root, args);
  ASSERT_TRUE(qemu.has_value()) << qemu.error().Describe();
  ASSERT_TRUE(qemu->Send("info pci\n").has_value());
  auto listed = qemu->WaitForLine("PCI device 4348:3253", 60s);
  EXPECT_TRUE(listed.has_value()) << listed.error().Describe() << "\n" << qemu->console();
  ASSERT_TRUE(qemu->Send("quit\n").has_value());
  auto status = qemu->WaitExit(30s);
  ASSERT_TRUE(status.has_value()) << status.error().Describe();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << qemu->StderrTail();
  ASSERT_EQ(kill(pid_, SIGTERM), 0);
  const int run_status = WaitForExit();
  EXPECT_TRUE(WIFEXITED(run_status) && WEXITSTATUS(run_status) == 0) << run_status;
}

TEST_F(RunScriptTest, ASecondRunOnTheSameStateDirLeavesTheFirstAlone) {
  ASSERT_NO_FATAL_FAILURE(StartAndWaitForTheCommand());
  const std::string command = std::string("UMDEV_BIN_DIR=") + UMDEV_BIN_DIR + " bash " +
                              RUN_SCRIPT + " --state-dir " + (dir_ / "state").string() + " 2>&1";
  FILE* run = popen(command.c_str(), "r");
  ASSERT_NE(run, nullptr);
  std::array<char, 4096> chunk{};
  std::string out;
  for (size_t n; (n = fread(chunk.data(), 1, chunk.size(), run)) > 0;) out.append(chunk.data(), n);
  const int status = pclose(run);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << out;
  EXPECT_NE(out.find("run: another umdevd is using"), std::string::npos) << out;
  // The first daemon still runs, with its one instance.
  EXPECT_EQ(kill(pid_, 0), 0);
  EXPECT_EQ(
      std::distance(fs::directory_iterator(dir_ / "state" / "vfio-user"), fs::directory_iterator{}),
      1);
}

TEST_F(RunScriptTest, RefusesUnknownArguments) {
  const std::string command =
      std::string("UMDEV_BIN_DIR=") + UMDEV_BIN_DIR + " bash " + RUN_SCRIPT + " --frobnicate 2>&1";
  FILE* run = popen(command.c_str(), "r");
  ASSERT_NE(run, nullptr);
  std::array<char, 4096> chunk{};
  std::string out;
  for (size_t n; (n = fread(chunk.data(), 1, chunk.size(), run)) > 0;) out.append(chunk.data(), n);
  const int status = pclose(run);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << out;
  EXPECT_NE(out.find("run: unknown argument '--frobnicate'"), std::string::npos) << out;
}

}  // namespace
