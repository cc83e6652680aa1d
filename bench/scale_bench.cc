// scale_bench: one umdevd (the real binary, mtty parent) with 1000 devices:
// creating and removing them all, and what an idle device costs the daemon
// in memory, threads and descriptors. The daemon starts under the common
// soft descriptor limit of 1024, as a login shell or a plain service
// manager would give it. The floor, measured in the same run: creating and
// removing as many listening UNIX sockets directly (each device is at least
// one), in the same tmpfs folder.
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>

#include "bench_check.h"
#include "e2e/umdevd_process.h"
#include "umdev/common/unix_address.h"
#include "umdev/common/unique_fd.h"
#include "umdev/common/uuid.h"
#include "umdev/control/client.h"

namespace umdev {
namespace {

constexpr int kDevices = 1000;

using bench::Check;

// On tmpfs where there is one, as umdevd's /run/umdev is: a socket's bind()
// on a disk file system costs what the disk's journal costs that moment.
std::filesystem::path TempDir(const std::string& name) {
  std::error_code ec;
  const std::filesystem::path base =
      std::filesystem::is_directory("/dev/shm", ec) ? "/dev/shm" : std::filesystem::temp_directory_path();
  auto dir = base / fmt::format("{}-{}", name, ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

// What /proc says of a process: resident memory, threads, open descriptors.
struct ProcessCost {
  double rss_kib = 0;
  double threads = 0;
  double fds = 0;
};

ProcessCost CostOf(pid_t pid) {
  ProcessCost cost;
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("VmRSS:")) cost.rss_kib = std::stod(line.substr(6));
    if (line.starts_with("Threads:")) cost.threads = std::stod(line.substr(8));
  }
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", pid))) {
    ++cost.fds;
  }
  return cost;
}

// The floor: kDevices listening sockets made and removed directly.
void BM_RawListeners(benchmark::State& state) {
  const auto dir = TempDir("scale-raw");
  for (auto _ : state) {
    std::vector<UniqueFd> sockets;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kDevices; ++i) {
      UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      const sockaddr_un address = Check(UnixAddress((dir / fmt::format("{}.sock", i)).string()));
      if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
          ::listen(fd.get(), 16) != 0) {
        std::abort();
      }
      sockets.push_back(std::move(fd));
    }
    const auto made = std::chrono::steady_clock::now();
    for (int i = 0; i < kDevices; ++i) ::unlink((dir / fmt::format("{}.sock", i)).c_str());
    sockets.clear();
    const auto removed = std::chrono::steady_clock::now();
    state.counters["create_s"] = Seconds(made - start);
    state.counters["remove_s"] = Seconds(removed - made);
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_RawListeners)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// One daemon, kDevices mtty-1 instances made and removed over the control
// socket, one request at a time as umdevctl or a device plugin sends them.
void BM_DaemonScale(benchmark::State& state) {
  const auto dir = TempDir("scale-daemon");
  // The soft limit a daemon usually starts with; umdevd raises it itself.
  rlimit saved{};
  ::getrlimit(RLIMIT_NOFILE, &saved);
  rlimit soft = saved;
  soft.rlim_cur = std::min<rlim_t>(1024, saved.rlim_max);
  ::setrlimit(RLIMIT_NOFILE, &soft);
  auto daemon = Check(test::UmdevdProcess::Start(
      UMDEVD, dir, fmt::format(R"({{"parents":[{{"driver":"mtty","ports":{}}}]}})", kDevices), {}, "info"));
  ::setrlimit(RLIMIT_NOFILE, &saved);
  auto client = Check(control::ControlClient::Connect((daemon.state_dir() / "control.sock").string()));
  std::vector<std::string> uuids;
  for (int i = 0; i < kDevices; ++i) uuids.push_back(Uuid::Generate().ToString());

  for (auto _ : state) {
    const ProcessCost idle = CostOf(daemon.pid());
    const auto start = std::chrono::steady_clock::now();
    for (const std::string& uuid : uuids) {
      Check(client.Call({{"cmd", "start"}, {"parent", "mtty"}, {"type", "mtty-1"}, {"uuid", uuid}}));
    }
    const auto made = std::chrono::steady_clock::now();
    const ProcessCost full = CostOf(daemon.pid());
    const auto listed = Check(client.Call({{"cmd", "list"}}));
    if (listed["mdevs"].size() != static_cast<size_t>(kDevices)) std::abort();
    const auto remove_start = std::chrono::steady_clock::now();
    for (const std::string& uuid : uuids) Check(client.Call({{"cmd", "stop"}, {"uuid", uuid}}));
    const auto removed = std::chrono::steady_clock::now();
    const ProcessCost after = CostOf(daemon.pid());
    state.counters["create_s"] = Seconds(made - start);
    state.counters["remove_s"] = Seconds(removed - remove_start);
    state.counters["rss_kib_per_device"] = (full.rss_kib - idle.rss_kib) / kDevices;
    state.counters["fds_per_device"] = (full.fds - idle.fds) / kDevices;
    state.counters["threads_idle"] = idle.threads;
    state.counters["threads_1000"] = full.threads;
    state.counters["fds_left_after_removal"] = after.fds - idle.fds;
  }
  // The limit the daemon reported after raising it.
  std::smatch match;
  const std::string log = daemon.Log();
  if (std::regex_search(log, match, std::regex("descriptor limit ([0-9]+)"))) {
    state.counters["fd_limit"] = std::stod(match[1]);
  }
  daemon.Stop();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_DaemonScale)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// Prints the table, then the figures against their floor and goals.
class ScaleReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& reports) override {
    ConsoleReporter::ReportRuns(reports);
    for (const Run& run : reports) {
      for (const auto& [name, counter] : run.counters) counters_[run.benchmark_name()][name] = counter.value;
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    auto& out = GetOutputStream();
    auto& raw = counters_["BM_RawListeners/iterations:1/real_time"];
    auto& daemon = counters_["BM_DaemonScale/iterations:1/real_time"];
    if (raw.empty() || daemon.empty()) return;
    out << fmt::format("\n{} devices in one umdevd (soft fd limit 1024 at start, raised to {:.0f}):\n", kDevices,
                       daemon["fd_limit"]);
    out << fmt::format("create all: {:.3f} s ({:.1f}x making {} listening sockets directly; goal < 1 s)\n",
                       daemon["create_s"], daemon["create_s"] / raw["create_s"], kDevices);
    out << fmt::format("remove all: {:.3f} s ({:.1f}x removing them directly; goal < 1 s)\n", daemon["remove_s"],
                       daemon["remove_s"] / raw["remove_s"]);
    out << fmt::format("resident memory per idle device: {:.1f} KiB (goal <= 256 KiB)\n",
                       daemon["rss_kib_per_device"]);
    out << fmt::format("threads: {:.0f} idle, {:.0f} with {} devices (bounded: independent of the count)\n",
                       daemon["threads_idle"], daemon["threads_1000"], kDevices);
    out << fmt::format("descriptors per device: {:.2f}; left after removing all: {:.0f}\n",
                       daemon["fds_per_device"], daemon["fds_left_after_removal"]);
  }

 private:
  std::map<std::string, std::map<std::string, double>> counters_;
};

}  // namespace
}  // namespace umdev

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  umdev::ScaleReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
}
