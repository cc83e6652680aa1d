// vfio_user_bench: the round trip of a trapped 4-byte register read over
// vfio-user, from an in-process client and from real QEMU (qtest), as a ratio
// to a raw UNIX-socket ping-pong of the same sizes measured in the same run.
// The QEMU cases need UMDEV_QEMU_ROOT (make bench sets it) and are skipped
// without it.
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "bench_check.h"
#include "run_times_reporter.h"
#include "e2e/qemu_qtest.h"
#include "e2e/umdevd_process.h"
#include "fakes/pci_test_device.h"
#include "fakes/test_parent.h"
#include "umdev/common/unix_address.h"
#include "umdev/pinning/type1_driver.h"
#include "umdev/vfio_user/message.h"
#include "umdev/vfio_user/server.h"

namespace umdev::vfio_user {
namespace {

constexpr double kMinTime = 0.5;  // Seconds per benchmark.
// REGION_READ of 4 bytes: a 32-byte request and a 36-byte reply.
constexpr size_t kRequestBytes = kHeaderSize + sizeof(RegionAccessPayload);
constexpr size_t kReplyBytes = kRequestBytes + 4;

using bench::Check;

void WriteAll(int fd, const void* data, size_t size) {
  if (::send(fd, data, size, MSG_NOSIGNAL) != static_cast<ssize_t>(size)) std::abort();
}

bool ReadAll(int fd, void* data, size_t size) {
  auto* at = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::recv(fd, at, size, 0);
    if (n <= 0) return false;
    at += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// CPU seconds of the whole process (client, server threads, pollers).
double ProcessCpuSeconds() {
  timespec now{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

// cpu_us: the process's CPU per round trip (both ends), next to the wall time.
void CountCpu(benchmark::State& state, double cpu_before) {
  state.counters["cpu_us"] =
      (ProcessCpuSeconds() - cpu_before) * 1e6 / static_cast<double>(state.iterations());
}

// The floor: a thread echoing a 36-byte answer to each 32-byte message,
// blocking reads and writes, no framing logic.
void BM_RawSocketPingPong(benchmark::State& state) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  UniqueFd client(fds[0]), server(fds[1]);
  std::thread echo([fd = server.get()] {
    char buffer[kReplyBytes] = {};
    while (ReadAll(fd, buffer, kRequestBytes)) WriteAll(fd, buffer, kReplyBytes);
  });
  char buffer[kReplyBytes] = {};
  const double cpu_before = ProcessCpuSeconds();
  for (auto _ : state) {
    WriteAll(client.get(), buffer, kRequestBytes);
    if (!ReadAll(client.get(), buffer, kReplyBytes)) std::abort();
  }
  CountCpu(state, cpu_before);
  ::shutdown(client.get(), SHUT_RDWR);
  echo.join();
}

// An in-process client: REGION_READ of 4 bytes of the device's config
// region through the server (epoll loop, framing, validation, the core's
// device call path, the vendor).
// With |busy_poll_us|, the device's client thread polls that long after
// each message instead of sleeping (the device attribute busy_poll_us).
void ServerRegionRead4(benchmark::State& state, uint32_t busy_poll_us) {
  const auto dir = std::filesystem::temp_directory_path() /
                   fmt::format("umdev-vu-bench-{}", ::getpid());
  Registry registry;
  Check(registry.iommu_drivers().Register(std::make_shared<pinning::Type1Driver>(
      std::make_shared<pinning::LockedMemoryAccount>(1 << 20))));
  Check(registry.RegisterParent(std::make_shared<umdev::testing::TestParentDriver>(
      umdev::testing::TestParentDriver::Options{})));
  Server server(registry, ServerOptions{.socket_dir = dir.string(), .threads = 1});
  Check(server.Start());
  const Uuid uuid = Uuid::Generate();
  Check(registry.CreateMdev("test_parent", "test-a", uuid));
  Check(registry.WriteMdevAttribute(uuid, "busy_poll_us", std::to_string(busy_poll_us)));
  sockaddr_un addr = Check(UnixAddress(server.SocketPath(uuid)));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) std::abort();
  MessageReader reader(1 << 20, 4);
  std::vector<std::byte> version;
  AppendPod(version, VersionPayload{0, 0});
  const std::string caps = "{}";
  AppendBytes(version, std::as_bytes(std::span(caps.c_str(), caps.size() + 1)));
  Check(SendMessage(fd.get(), Header{1, 1, 0, kTypeCommand, 0}, version));
  Check(ReceiveMessage(fd.get(), reader, std::chrono::seconds(5)));
  std::vector<std::byte> request;
  AppendPod(request, RegionAccessPayload{0, VFIO_PCI_CONFIG_REGION_INDEX, 4});
  uint16_t id = 2;
  const double cpu_before = ProcessCpuSeconds();
  for (auto _ : state) {
    Check(SendMessage(fd.get(), Header{id++, 9, 0, kTypeCommand, 0}, request));
    Message reply = Check(ReceiveMessage(fd.get(), reader, std::chrono::seconds(5)));
    benchmark::DoNotOptimize(reply.payload.data());
  }
  CountCpu(state, cpu_before);
  fd.Reset();
  server.Stop();
  std::filesystem::remove_all(dir);
}

void BM_ServerRegionRead4(benchmark::State& state) { ServerRegionRead4(state, 0); }
void BM_ServerRegionRead4BusyPoll(benchmark::State& state) { ServerRegionRead4(state, 1000); }

// Real QEMU under qtest with a PCI test device from a real umdevd: each
// iteration is one qtest "readl" line to QEMU and its answer. The device
// read is QEMU -> REGION_READ -> umdevd -> reply -> QEMU; the RAM read is
// the same qtest exchange without the device, the part QEMU alone costs.
class QemuRig {
 public:
  static constexpr uint64_t kBar0 = 0xe0000000;
  static constexpr uint64_t kRam = 0x100000;

  // Null, with the reason in |why|, when QEMU or the daemon cannot run here.
  static std::unique_ptr<QemuRig> Start(std::string* why) {
    const auto root = umdev::test::QemuRootFromEnvironment();
    if (!root) {
      *why = "UMDEV_QEMU_ROOT is not set (make bench sets it)";
      return nullptr;
    }
    auto rig = std::unique_ptr<QemuRig>(new QemuRig());
    auto scratch = umdev::test::RootScratchDir::Create(*root);
    if (!scratch) return Fail(why, scratch.error());
    rig->scratch_.emplace(std::move(*scratch));
    auto daemon = umdev::test::UmdevdProcess::Start(
        UMDEVD_TESTBED, rig->scratch_->path(),
        R"({"parents":[{"driver":"test-pci","name":"pci0"}]})", {}, "warn");
    if (!daemon) return Fail(why, daemon.error());
    rig->daemon_.emplace(std::move(*daemon));
    const std::string uuid = Uuid::Generate().ToString();
    auto created = rig->daemon_->Ctl(UMDEVCTL, "start -p pci0 -t test_pci-basic -u " + uuid);
    if (!created) return Fail(why, created.error());
    umdev::test::QemuQtestOptions options;
    options.root = *root;
    options.devices.push_back({rig->daemon_->SocketOf(uuid), "04.0", "dev0"});
    auto qemu = umdev::test::QemuQtest::Start(std::move(options));
    if (!qemu) return Fail(why, qemu.error());
    rig->qemu_.emplace(std::move(*qemu));
    // Place BAR0 and enable memory decoding, as firmware would.
    auto placed = rig->qemu_->ConfigWrite32(4, 0, 0x10, static_cast<uint32_t>(kBar0));
    if (placed) placed = rig->qemu_->ConfigWrite16(4, 0, 0x04, 0x0002);
    if (!placed) return Fail(why, placed.error());
    return rig;
  }

  umdev::test::QemuQtest& qemu() { return *qemu_; }

 private:
  QemuRig() = default;
  static std::unique_ptr<QemuRig> Fail(std::string* why, const Error& error) {
    *why = error.Describe();
    return nullptr;
  }

  // Destroyed in reverse: QEMU first, then the daemon, then the scratch dir.
  std::optional<umdev::test::RootScratchDir> scratch_;
  std::optional<umdev::test::UmdevdProcess> daemon_;
  std::optional<umdev::test::QemuQtest> qemu_;
};

void QemuReadLoop(benchmark::State& state, uint64_t address, uint32_t expected) {
  std::string why;
  auto rig = QemuRig::Start(&why);
  if (!rig) {
    state.SkipWithError(why.c_str());
    for (auto _ : state) {
    }
    return;
  }
  if (expected != 0) {
    auto value = rig->qemu().Readl(address);
    if (!value || *value != expected) {
      state.SkipWithError("the device did not answer with its id");
      for (auto _ : state) {
      }
      return;
    }
  }
  for (auto _ : state) {
    auto value = rig->qemu().Readl(address);
    if (!value) std::abort();
    benchmark::DoNotOptimize(*value);
  }
}

void BM_QemuQtestBarRead4(benchmark::State& state) {
  QemuReadLoop(state, QemuRig::kBar0 + umdev::testing::pci_test::kRegId,
               umdev::testing::pci_test::kIdValue);
}

void BM_QemuQtestRamRead4(benchmark::State& state) {
  QemuReadLoop(state, QemuRig::kRam, 0);
}

BENCHMARK(BM_RawSocketPingPong)->MinTime(kMinTime)->UseRealTime();
BENCHMARK(BM_ServerRegionRead4)->MinTime(kMinTime)->UseRealTime();
BENCHMARK(BM_ServerRegionRead4BusyPoll)->MinTime(kMinTime)->UseRealTime();
BENCHMARK(BM_QemuQtestBarRead4)->MinTime(kMinTime)->UseRealTime();
BENCHMARK(BM_QemuQtestRamRead4)->MinTime(kMinTime)->UseRealTime();

// Prints the table, then each round trip as a multiple of the raw ping-pong.
class RatioReporter : public bench::RunTimesReporter {
 public:
  void Finalize() override {
    ConsoleReporter::Finalize();
    auto& out = GetOutputStream();
    const double floor = Ns("BM_RawSocketPingPong");
    if (floor <= 0) return;
    out << fmt::format("\nRound trips as multiples of a raw UNIX-socket ping-pong ({:.2f} us):\n",
                       floor / 1e3);
    for (const auto& [name, ns] : all_ns()) {
      if (name == "BM_RawSocketPingPong") continue;
      out << fmt::format("{:<28} {:8.2f} us  {:6.2f}x\n", name, ns / 1e3, ns / floor);
    }
  }

};

}  // namespace
}  // namespace umdev::vfio_user

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  umdev::vfio_user::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
