// A real umdevd (or the testbed) in a temporary state dir, and umdevctl run
// against it as a separate process, for the CLI's integration tests.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace umdev::test {

struct Output {
  int status = -1;
  std::string out;  // stdout and stderr together, in order.
};

// Test thread only.
class CliFixture : public ::testing::Test {
 protected:
  // The daemon binary and its config; override to run another.
  virtual std::string Binary() const { return UMDEVD_TESTBED; }
  virtual std::string Config() const {
    return R"({"parents":[{"driver":"test","name":"parent0","max_instances":2},)"
           R"({"driver":"test","name":"parent1"}],"limits":{"removal_timeout_ms":500}})";
  }

  void SetUp() override {
    // Short: the device sockets inside must fit sockaddr_un's 108 bytes.
    static int serial = 0;
    dir_ = std::filesystem::temp_directory_path() /
           ("umc-" + std::to_string(getpid()) + "-" + std::to_string(serial++));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "config.json") << Config();
    daemon_ = StartDaemon();
    ASSERT_GT(daemon_, 0);
    ASSERT_TRUE(std::filesystem::exists(dir_ / "state" / "control.sock"));
  }

  void TearDown() override {
    if (daemon_ > 0) StopDaemon();
    std::filesystem::remove_all(dir_);
  }

  pid_t StartDaemon() {
    const std::string state = (dir_ / "state").string();
    const std::string config = (dir_ / "config.json").string();
    const std::string binary = Binary();
    const pid_t pid = fork();
    if (pid == 0) {
      execl(binary.c_str(), binary.c_str(), "--state-dir", state.c_str(), "--config",
            config.c_str(), "--log-level", "warn", nullptr);
      _exit(127);
    }
    // Ready once the control socket exists (bounded wait).
    for (int i = 0; i < 500 && !std::filesystem::exists(dir_ / "state" / "control.sock"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pid;
  }

  int StopDaemon() { return Terminate(daemon_); }

  // SIGTERM to |pid|, reaped; |pid| becomes -1. Returns the wait status.
  static int Terminate(pid_t& pid) {
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    pid = -1;
    return status;
  }

  void RestartDaemon() {
    ASSERT_EQ(WEXITSTATUS(StopDaemon()), 0);
    daemon_ = StartDaemon();
    ASSERT_TRUE(std::filesystem::exists(dir_ / "state" / "control.sock"));
  }

  static Output Run(const std::string& command) {
    Output result;
    FILE* pipe = popen((command + " 2>&1").c_str(), "r");
    std::array<char, 4096> chunk{};
    for (size_t n; (n = fread(chunk.data(), 1, chunk.size(), pipe)) > 0;) {
      result.out.append(chunk.data(), n);
    }
    const int status = pclose(pipe);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
  }

  Output Ctl(const std::string& args) const {
    return Run(std::string(UMDEVCTL) + " --state-dir " + (dir_ / "state").string() + " " + args);
  }

  std::string Definitions() const { return (dir_ / "state" / "mdevctl.d").string(); }

  std::string ReadFile(const std::filesystem::path& path) const {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  std::string WriteFile(const std::string& name, const std::string& text) const {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }

  std::filesystem::path dir_;
  pid_t daemon_ = -1;
};

}  // namespace umdev::test
