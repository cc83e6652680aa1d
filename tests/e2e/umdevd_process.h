// UmdevdProcess: a real umdevd (the testbed build, with the test vendors) run
// as a child process for end-to-end tests, plus umdevctl against it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "umdev/common/error.h"

namespace umdev::test {

// A shell command's exit status (-1 when it did not exit normally or could
// not start) and its stdout.
struct ShellOutput {
  int status = -1;
  std::string out;
  bool operator==(const ShellOutput&) const = default;
};
std::ostream& operator<<(std::ostream& os, const ShellOutput& output);  // for gtest
// Runs |command| with /bin/sh (popen); redirections are the caller's.
ShellOutput RunShell(const std::string& command);

// Test thread only. The destructor stops the daemon (SIGTERM, then SIGKILL).
class UmdevdProcess {
 public:
  // Writes |config_json| to DIR/config.json and starts |binary| with
  // --state-dir DIR/state --log-level |log_level| and |extra_args|; returns
  // once DIR/state/control.sock exists. Errors: ETIMEDOUT not ready in 10 s
  // (the daemon's log is in the context).
  static Result<UmdevdProcess> Start(const std::string& binary, const std::filesystem::path& dir,
                                     const std::string& config_json,
                                     const std::vector<std::string>& extra_args = {},
                                     const std::string& log_level = "debug");
  UmdevdProcess(UmdevdProcess&& other) noexcept;
  UmdevdProcess& operator=(UmdevdProcess&&) = delete;
  UmdevdProcess(const UmdevdProcess&) = delete;
  UmdevdProcess& operator=(const UmdevdProcess&) = delete;
  ~UmdevdProcess();

  // Runs `umdevctl --state-dir DIR/state ARGS`; returns its stdout+stderr.
  // Errors: EIO a non-zero exit (the output is in the context).
  Result<std::string> Ctl(const std::string& umdevctl, const std::string& args) const;

  std::filesystem::path state_dir() const { return dir_ / "state"; }
  std::filesystem::path SocketOf(const std::string& uuid) const {
    return state_dir() / "vfio-user" / (uuid + ".sock");
  }
  // The daemon's stderr so far (spdlog writes there).
  std::string Log() const;
  bool running() const;
  pid_t pid() const { return pid_; }
  // SIGTERM and wait; returns the wait status.
  int Stop();

 private:
  UmdevdProcess(std::filesystem::path dir, pid_t pid) : dir_(std::move(dir)), pid_(pid) {}
  std::filesystem::path dir_;
  pid_t pid_ = -1;
};

}  // namespace umdev::test
