// gpu_scheduler_bench: what the GPU scheduler itself costs per command (queues
// whose commands do nothing) and how long a doorbell takes to start one.
#include <benchmark/benchmark.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <vector>

#include "umdev/vendor/gpu/scheduler.h"

namespace umdev::vendor::gpu {
namespace {

// Commands that cost nothing: |budget| of them, then idle. Thread-safe.
class EmptyQueue final : public CommandQueue {
 public:
  void Add(int64_t commands) { budget_.fetch_add(commands, std::memory_order_release); }
  int64_t left() const { return budget_.load(std::memory_order_acquire); }

  std::optional<CommandCost> RunOne() override {
    if (budget_.load(std::memory_order_acquire) <= 0) return std::nullopt;
    budget_.fetch_sub(1, std::memory_order_acq_rel);
    return CommandCost{};
  }

 private:
  std::atomic<int64_t> budget_{0};
};

std::unique_ptr<Scheduler> MakeScheduler(int64_t policy) {
  auto scheduler = Scheduler::Create({.policy = static_cast<SchedulingPolicy>(policy)});
  if (!scheduler.has_value()) {
    spdlog::critical("gpu_scheduler_bench: {}", scheduler.error().Describe());
    std::abort();
  }
  return std::move(scheduler).value();
}

void SetLabel(benchmark::State& state) {
  state.SetLabel(std::string(FormatSchedulingPolicy(static_cast<SchedulingPolicy>(state.range(0)))));
}

// Args: policy, queues. Each iteration queues 1000 commands on every queue,
// rings every doorbell and waits for all of them: the per-command cost of
// picking, accounting and the unlocked call.
void BM_DrainQueues(benchmark::State& state) {
  constexpr int64_t kCommands = 1000;
  auto scheduler = MakeScheduler(state.range(0));
  const int queues = static_cast<int>(state.range(1));
  std::vector<std::unique_ptr<EmptyQueue>> devices;
  std::vector<Scheduler::Handle> handles;
  for (int i = 0; i < queues; ++i) {
    devices.push_back(std::make_unique<EmptyQueue>());
    auto handle = scheduler->Attach(devices.back().get(), 1000 / queues);
    if (!handle.has_value()) std::abort();
    handles.push_back(std::move(handle).value());
  }
  for (auto _ : state) {
    for (int i = 0; i < queues; ++i) {
      devices[i]->Add(kCommands);
      handles[i].Kick();
    }
    for (const auto& device : devices) {
      while (device->left() > 0) {
      }
    }
  }
  state.SetItemsProcessed(state.iterations() * kCommands * queues);
  SetLabel(state);
}

// Args: policy. One command per doorbell, waited for: the wake-up latency of
// an idle scheduler.
void BM_KickToCommand(benchmark::State& state) {
  auto scheduler = MakeScheduler(state.range(0));
  EmptyQueue device;
  auto handle = scheduler->Attach(&device, 1000);
  if (!handle.has_value()) std::abort();
  for (auto _ : state) {
    device.Add(1);
    handle->Kick();
    while (device.left() > 0) {
    }
  }
  SetLabel(state);
}

constexpr int64_t kPolicies[] = {static_cast<int64_t>(SchedulingPolicy::kBestEffort),
                                 static_cast<int64_t>(SchedulingPolicy::kEqualShare),
                                 static_cast<int64_t>(SchedulingPolicy::kFixedShare)};

void DrainArgs(benchmark::internal::Benchmark* b) {
  for (int64_t policy : kPolicies) {
    for (int64_t queues : {1, 2, 4}) b->Args({policy, queues});
  }
}

void KickArgs(benchmark::internal::Benchmark* b) {
  for (int64_t policy : kPolicies) b->Args({policy});
}

BENCHMARK(BM_DrainQueues)->Apply(DrainArgs)->UseRealTime();
BENCHMARK(BM_KickToCommand)->Apply(KickArgs)->UseRealTime();

}  // namespace
}  // namespace umdev::vendor::gpu

BENCHMARK_MAIN();
