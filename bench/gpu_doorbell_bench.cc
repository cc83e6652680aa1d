// Submit -> fence interrupt through real QEMU (qtest) and a real umdevd's gpu
// slice, with the trapped doorbell (QUEUE_TAIL and DOORBELL: two
// synchronous vfio-user round trips, as QEMU posts no writes once a BAR is
// mmapped) and with the polled doorbell page (a store to mapped memory), next
// to the floor: one qtest read of guest RAM, the probe's own cost. Each
// iteration clears the MSI-X target word, rings, and reads the word until
// the fence's message lands. The daemon's CPU per submission and while idle
// after the spin window are read from its threads' schedstat.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "bench_check.h"
#include "run_times_reporter.h"
#include "e2e/qemu_qtest.h"
#include "e2e/umdevd_process.h"
#include "umdev/common/uuid.h"
#include "umdev/vendor/gpu/gpu_regs.h"

namespace umdev::vendor::gpu {
namespace {

using namespace regs;  // NOLINT: the device's programming model.
using bench::Check;

constexpr uint8_t kSlot = 4;
constexpr uint64_t kBar0 = 0xe0000000;
constexpr uint64_t kBar2 = 0xe0200000;
constexpr uint64_t kBar4 = 0xe0400000;
constexpr uint64_t kRing = 0x400000;
constexpr uint64_t kFence = 0x600000;
constexpr uint64_t kMsiTarget = 0x300000;
constexpr uint32_t kMsiData = 0xa0;
constexpr uint32_t kRingSize = 16;
constexpr auto kSpin = std::chrono::microseconds(1000);

// Nanoseconds the daemon's threads have run, from /proc/PID/task/*/schedstat.
uint64_t DaemonCpuNs(pid_t pid) {
  uint64_t total = 0;
  const auto tasks = std::filesystem::path("/proc") / std::to_string(pid) / "task";
  std::error_code error;
  for (const auto& task : std::filesystem::directory_iterator(tasks, error)) {
    std::ifstream in(task.path() / "schedstat");
    uint64_t ns = 0;
    if (in >> ns) total += ns;
  }
  return total;
}

// One umdevd with a cpu gpu parent, one 1of8 instance, and QEMU attached to
// it with BARs, bus mastering and MSI-X vector 0 programmed. Made once.
class Rig {
 public:
  static Rig* Get(std::string* why) {
    static std::unique_ptr<Rig> rig = Start(why);
    return rig.get();
  }

  test::QemuQtest& qemu() { return *qemu_; }
  pid_t daemon_pid() const { return daemon_->pid(); }
  std::string ParentAttribute(const std::string& name) {
    return Check(daemon_->Ctl(UMDEVCTL, "attr -p gpu0 -n " + name));
  }

  // Enables a fresh queue of kRingSize FENCE entries (each with an
  // interrupt) in |ctrl|'s mode; the tail starts at 0.
  void EnableQueue(uint32_t ctrl) {
    Check(qemu_->Writel(kBar0 + kRegQueueCtrl, 0));
    Check(qemu_->Writel(kBar0 + kRegQueueBase, static_cast<uint32_t>(kRing)));
    Check(qemu_->Writel(kBar0 + kRegQueueBase + 4, 0));
    Check(qemu_->Writel(kBar0 + kRegQueueSize, kRingSize));
    Check(qemu_->Writel(kBar0 + kRegQueueCtrl, ctrl));
    if (Check(qemu_->Readl(kBar0 + kRegQueueCtrl)) != ctrl) {
      spdlog::critical("gpu_doorbell_bench: the queue did not enable");
      std::abort();
    }
    tail_ = 0;
  }
  uint32_t NextTail() { return ++tail_; }
  void WaitFenceMessage() {
    while (Check(qemu_->Readl(kMsiTarget)) != kMsiData) {
    }
  }

 private:
  static std::unique_ptr<Rig> Start(std::string* why) {
    const auto root = test::QemuRootFromEnvironment();
    if (!root) {
      *why = "UMDEV_QEMU_ROOT is not set (make bench sets it)";
      return nullptr;
    }
    auto rig = std::unique_ptr<Rig>(new Rig());
    rig->scratch_.emplace(Check(test::RootScratchDir::Create(*root)));
    rig->daemon_.emplace(Check(test::UmdevdProcess::Start(
        UMDEVD, rig->scratch_->path(),
        fmt::format(R"({{"parents":[{{"driver":"gpu","engine":"cpu","name":"gpu0",)"
                    R"("memory":"16M","doorbell_spin_us":{}}}]}})",
                    kSpin.count()),
        {}, "warn")));
    const std::string uuid = Uuid::Generate().ToString();
    Check(rig->daemon_->Ctl(UMDEVCTL, "start -p gpu0 -t gpu-1of8 -u " + uuid));
    test::QemuQtestOptions options;
    options.root = *root;
    options.devices.push_back({rig->daemon_->SocketOf(uuid), "04.0", "gpu"});
    rig->qemu_.emplace(Check(test::QemuQtest::Start(std::move(options))));
    auto& q = *rig->qemu_;
    Check(q.ConfigWrite32(kSlot, 0, 0x10, static_cast<uint32_t>(kBar0)));
    Check(q.ConfigWrite32(kSlot, 0, 0x18, static_cast<uint32_t>(kBar2)));
    Check(q.ConfigWrite32(kSlot, 0, 0x1c, 0));
    Check(q.ConfigWrite32(kSlot, 0, 0x20, static_cast<uint32_t>(kBar4)));
    Check(q.ConfigWrite16(kSlot, 0, 0x04, 0x0006));
    uint8_t msix = Check(q.ConfigRead8(kSlot, 0, 0x34));
    while (msix != 0 && Check(q.ConfigRead8(kSlot, 0, msix)) != 0x11) {
      msix = Check(q.ConfigRead8(kSlot, 0, msix + 1));
    }
    const uint64_t entry = kBar0 + kMsixTableOffset;
    Check(q.Writel(entry + 0, static_cast<uint32_t>(kMsiTarget)));
    Check(q.Writel(entry + 4, 0));
    Check(q.Writel(entry + 8, kMsiData));
    Check(q.Writel(entry + 12, 0));
    Check(q.ConfigWrite16(kSlot, 0, msix + 2, 0x8000));
    for (uint32_t i = 0; i < kRingSize; ++i) {
      const RingEntry fence = RingEntry().U32(kEntryOpcode, kOpFence)
                                  .U32(kEntryFlags, kFenceInterrupt)
                                  .U64(kFenceIova, kFence).U64(kFenceValue, i);
      Check(q.MemWrite(kRing + i * kEntrySize,
                       std::span(reinterpret_cast<const uint8_t*>(fence.bytes), kEntrySize)));
    }
    if ((Check(q.Readl(kBar0 + kRegCaps)) & kCapDoorbellPage) == 0) {
      *why = "the device offers no doorbell page";
      return nullptr;
    }
    return rig;
  }
  Rig() = default;

  // Destroyed in reverse: QEMU first, then the daemon, then the scratch dir.
  std::optional<test::RootScratchDir> scratch_;
  std::optional<test::UmdevdProcess> daemon_;
  std::optional<test::QemuQtest> qemu_;
  uint32_t tail_ = 0;
};

Rig* RigOrSkip(benchmark::State& state) {
  std::string why;
  Rig* rig = Rig::Get(&why);
  if (rig == nullptr) {
    state.SkipWithError(why.empty() ? "the rig did not start" : why.c_str());
    for (auto _ : state) {
    }
  }
  return rig;
}

void BM_QtestRamRead4(benchmark::State& state) {
  Rig* rig = RigOrSkip(state);
  if (rig == nullptr) return;
  for (auto _ : state) benchmark::DoNotOptimize(Check(rig->qemu().Readl(kRing)));
}

void SubmitLoop(benchmark::State& state, bool polled) {
  Rig* rig = RigOrSkip(state);
  if (rig == nullptr) return;
  auto& q = rig->qemu();
  rig->EnableQueue(kQueueEnable | (polled ? kQueueDoorbellPage : 0));
  uint64_t traps = 0;
  std::chrono::nanoseconds ringing{0};
  const uint64_t cpu_before = DaemonCpuNs(rig->daemon_pid());
  for (auto _ : state) {
    Check(q.Writel(kMsiTarget, 0));
    const uint32_t tail = rig->NextTail();
    const auto ring_start = std::chrono::steady_clock::now();
    if (polled) {
      Check(q.Writel(kBar4 + kDbTail, tail));
      if (Check(q.Readl(kBar4 + kDbPolling)) == 0) {
        Check(q.Writel(kBar0 + kRegDoorbell, 1));
        ++traps;
      }
    } else {
      Check(q.Writel(kBar0 + kRegQueueTail, tail));
      Check(q.Writel(kBar0 + kRegDoorbell, 1));
      ++traps;
    }
    ringing += std::chrono::steady_clock::now() - ring_start;
    rig->WaitFenceMessage();
  }
  const double cpu_us = static_cast<double>(DaemonCpuNs(rig->daemon_pid()) - cpu_before) / 1e3;
  const auto n = static_cast<double>(state.iterations());
  state.counters["trapped"] = static_cast<double>(traps) / n;
  // The doorbell alone: the guest's accesses from its first store to the
  // last, what a vCPU would be held for.
  state.counters["ring_us"] = static_cast<double>(ringing.count()) / 1e3 / n;
  state.counters["daemon_cpu_us"] = cpu_us / n;
}

void BM_SubmitToFenceTrapped(benchmark::State& state) { SubmitLoop(state, false); }
void BM_SubmitToFencePolled(benchmark::State& state) { SubmitLoop(state, true); }

// The daemon's CPU while the guest is quiet, from the end of the spin
// window on, after a polled submission: what the poller costs idle.
void BM_IdleAfterPolledDoorbell(benchmark::State& state) {
  Rig* rig = RigOrSkip(state);
  if (rig == nullptr) return;
  rig->EnableQueue(kQueueEnable | kQueueDoorbellPage);
  double cpu_percent = 0;
  for (auto _ : state) {
    state.PauseTiming();
    Check(rig->qemu().Writel(kMsiTarget, 0));
    Check(rig->qemu().Writel(kBar4 + kDbTail, rig->NextTail()));
    if (Check(rig->qemu().Readl(kBar4 + kDbPolling)) == 0) {
      Check(rig->qemu().Writel(kBar0 + kRegDoorbell, 1));
    }
    rig->WaitFenceMessage();
    std::this_thread::sleep_for(kSpin * 5);
    state.ResumeTiming();
    const uint64_t before = DaemonCpuNs(rig->daemon_pid());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    cpu_percent += static_cast<double>(DaemonCpuNs(rig->daemon_pid()) - before) / 200e6 * 100;
  }
  state.counters["daemon_cpu_percent"] = cpu_percent / static_cast<double>(state.iterations());
  state.counters["polling_ns_total"] = std::stod(rig->ParentAttribute("doorbell_polling_ns"));
}

BENCHMARK(BM_QtestRamRead4)->MinTime(1.0)->UseRealTime();
BENCHMARK(BM_SubmitToFenceTrapped)->MinTime(1.0)->UseRealTime();
BENCHMARK(BM_SubmitToFencePolled)->MinTime(1.0)->UseRealTime();
BENCHMARK(BM_IdleAfterPolledDoorbell)->Iterations(5)->UseRealTime();

// Prints the table, then each latency as a multiple of the qtest read.
class RatioReporter : public bench::RunTimesReporter {
 public:
  void Finalize() override {
    ConsoleReporter::Finalize();
    const double floor = Ns("BM_QtestRamRead4");
    if (floor <= 0) return;
    auto& out = GetOutputStream();
    out << fmt::format("\nSubmit -> fence message as multiples of one qtest read ({:.2f} us):\n",
                       floor / 1e3);
    for (const char* name : {"BM_SubmitToFenceTrapped", "BM_SubmitToFencePolled"}) {
      if (Ns(name) > 0) {
        out << fmt::format("{:<28} {:8.2f} us  {:6.2f}x\n", name, Ns(name) / 1e3,
                           Ns(name) / floor);
      }
    }
  }

};

}  // namespace
}  // namespace umdev::vendor::gpu

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  umdev::vendor::gpu::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
