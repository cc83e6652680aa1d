// UmdevdProcess: fork/exec, readiness, umdevctl, and teardown.
#include "e2e/umdevd_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace umdev::test {

Result<UmdevdProcess> UmdevdProcess::Start(const std::string& binary,
                                           const std::filesystem::path& dir,
                                           const std::string& config_json,
                                           const std::vector<std::string>& extra_args,
                                           const std::string& log_level) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << config_json;
  const std::string state = (dir / "state").string();
  const std::string config = (dir / "config.json").string();
  const std::string log = (dir / "umdevd.log").string();
  std::vector<std::string> args = {binary,  "--state-dir", state,  "--config",
                                   config, "--log-level", log_level};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return FailErrno("fork");
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  UmdevdProcess process(dir, pid);
  for (int i = 0; i < 1000; ++i) {
    if (std::filesystem::exists(dir / "state" / "control.sock")) return process;
    if (!process.running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Fail(ETIMEDOUT, "umdevd did not start; its log:\n" + process.Log());
}

UmdevdProcess::UmdevdProcess(UmdevdProcess&& other) noexcept
    : dir_(std::move(other.dir_)), pid_(other.pid_) {
  other.pid_ = -1;
}

UmdevdProcess::~UmdevdProcess() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 1000; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
}

bool UmdevdProcess::running() const {
  return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0;
}

int UmdevdProcess::Stop() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

std::string UmdevdProcess::Log() const {
  std::ifstream in(dir_ / "umdevd.log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

ShellOutput RunShell(const std::string& command) {
  ShellOutput result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> chunk{};
  for (size_t n; (n = std::fread(chunk.data(), 1, chunk.size(), pipe)) > 0;) {
    result.out.append(chunk.data(), n);
  }
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::ostream& operator<<(std::ostream& os, const ShellOutput& output) {
  return os << "exit " << output.status << ", output:\n" << output.out;
}

Result<std::string> UmdevdProcess::Ctl(const std::string& umdevctl,
                                       const std::string& args) const {
  ShellOutput result =
      RunShell(umdevctl + " --state-dir " + state_dir().string() + " " + args + " 2>&1");
  if (result.status != 0) return Fail(EIO, "umdevctl " + args + ": " + result.out);
  return std::move(result.out);
}

}  // namespace umdev::test
