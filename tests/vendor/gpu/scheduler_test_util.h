// Fakes for the scheduler tests: command queues whose commands report
// synthetic costs and advance a simulated clock.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "umdev/vendor/gpu/scheduler.h"

namespace umdev::vendor::gpu::testing {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

inline constexpr std::chrono::microseconds kSlice{2000};

// Bounded polling for a condition the scheduler thread brings about.
inline bool WaitFor(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return condition();
}

// Simulated time: commands advance it by their cost, and a throttled
// scheduler's wait jumps it straight to the deadline.
class FakeClock final : public SchedulerClock {
 public:
  nanoseconds Now() override { return nanoseconds(now_.load()); }
  void WaitUntil(Mutex& /*mu*/, CondVar& /*cv*/, nanoseconds deadline) override {
    int64_t current = now_.load();
    while (current < deadline.count() && !now_.compare_exchange_weak(current, deadline.count())) {
    }
  }
  void Advance(nanoseconds by) { now_ += by.count(); }

 private:
  std::atomic<int64_t> now_{0};
};

// The order in which commands of all queues ran.
class RunLog {
 public:
  void Add(int id) {
    MutexLock lock(mu_);
    order_.push_back(id);
  }
  std::vector<int> Snapshot() {
    MutexLock lock(mu_);
    return order_;
  }

 private:
  Mutex mu_;
  std::vector<int> order_ UMDEV_GUARDED_BY(mu_);
};

inline CommandCost Cost(nanoseconds busy, uint64_t bytes = 0, bool failed = false) {
  return CommandCost{busy, bytes, failed};
}

// A device's queue: scripted commands, or an endless stream of one cost
// until a point of simulated time. Thread-safe.
class FakeQueue final : public CommandQueue {
 public:
  FakeQueue(int id, FakeClock* clock, RunLog* log = nullptr) : id_(id), clock_(clock), log_(log) {}

  void Push(CommandCost cost, int count = 1) {
    MutexLock lock(mu_);
    for (int i = 0; i < count; ++i) script_.push_back(cost);
  }
  // Commands of |cost| while the clock reads before |until|.
  void Greedy(CommandCost cost, nanoseconds until) {
    MutexLock lock(mu_);
    greedy_ = cost;
    greedy_until_ = until;
  }
  // The next RunOne() announces itself and blocks until Release().
  void HoldNext() {
    MutexLock lock(mu_);
    hold_ = true;
  }
  void WaitHeld() {
    MutexLock lock(mu_);
    while (!held_) cv_.Wait(mu_);
  }
  void Release() {
    MutexLock lock(mu_);
    hold_ = false;
    cv_.NotifyAll();
  }
  // Called on the scheduler thread after each command, with the count so far.
  void OnCommand(std::function<void(uint64_t)> hook) {
    MutexLock lock(mu_);
    on_command_ = std::move(hook);
  }
  // Called on the scheduler thread by a RunOne() that finds nothing to do.
  void OnIdle(std::function<void()> hook) {
    MutexLock lock(mu_);
    on_idle_ = std::move(hook);
  }

  uint64_t ran() {
    MutexLock lock(mu_);
    return ran_;
  }
  uint64_t idle_calls() {
    MutexLock lock(mu_);
    return idle_calls_;
  }
  bool running() {
    MutexLock lock(mu_);
    return in_run_one_;
  }

  std::optional<CommandCost> RunOne() override {
    std::optional<CommandCost> cost;
    uint64_t ran = 0;
    std::function<void(uint64_t)> on_command;
    std::function<void()> on_idle;
    {
      MutexLock lock(mu_);
      in_run_one_ = true;
      if (hold_) {
        held_ = true;
        cv_.NotifyAll();
        while (hold_) cv_.Wait(mu_);
        held_ = false;
      }
      if (!script_.empty()) {
        cost = script_.front();
        script_.pop_front();
      } else if (greedy_ && clock_->Now() < greedy_until_) {
        cost = greedy_;
      }
      if (cost) {
        ran = ++ran_;
        on_command = on_command_;
      } else {
        ++idle_calls_;
        on_idle = on_idle_;
      }
    }
    if (cost) {
      if (clock_ != nullptr) clock_->Advance(cost->busy);
      if (log_ != nullptr) log_->Add(id_);
      if (on_command) on_command(ran);
    } else if (on_idle) {
      on_idle();
    }
    MutexLock lock(mu_);
    in_run_one_ = false;
    return cost;
  }

 private:
  const int id_;
  FakeClock* const clock_;
  RunLog* const log_;
  Mutex mu_;
  CondVar cv_;
  std::deque<CommandCost> script_ UMDEV_GUARDED_BY(mu_);
  std::optional<CommandCost> greedy_ UMDEV_GUARDED_BY(mu_);
  nanoseconds greedy_until_ UMDEV_GUARDED_BY(mu_){0};
  bool hold_ UMDEV_GUARDED_BY(mu_) = false;
  bool held_ UMDEV_GUARDED_BY(mu_) = false;
  bool in_run_one_ UMDEV_GUARDED_BY(mu_) = false;
  uint64_t ran_ UMDEV_GUARDED_BY(mu_) = 0;
  uint64_t idle_calls_ UMDEV_GUARDED_BY(mu_) = 0;
  std::function<void(uint64_t)> on_command_ UMDEV_GUARDED_BY(mu_);
  std::function<void()> on_idle_ UMDEV_GUARDED_BY(mu_);
};

inline std::unique_ptr<Scheduler> MakeScheduler(SchedulingPolicy policy,
                                         std::shared_ptr<FakeClock> clock) {
  auto scheduler = Scheduler::Create({.policy = policy, .time_slice = kSlice, .clock = clock});
  EXPECT_TRUE(scheduler.has_value());
  return std::move(scheduler).value();
}

inline Scheduler::Handle AttachOk(Scheduler& scheduler, CommandQueue& queue, uint32_t share) {
  auto handle = scheduler.Attach(&queue, share);
  EXPECT_TRUE(handle.has_value()) << handle.error().Describe();
  return std::move(handle).value();
}

inline double Fraction(nanoseconds part, nanoseconds whole) {
  return static_cast<double>(part.count()) / static_cast<double>(whole.count());
}

inline std::string PolicyName(const ::testing::TestParamInfo<SchedulingPolicy>& param_info) {
  return std::string(FormatSchedulingPolicy(param_info.param));
}

// Waits until every queue in |queues| has answered "idle" once, which greedy
// queues do only after the clock passed their end.
inline bool WaitAllIdle(std::initializer_list<FakeQueue*> queues) {
  return WaitFor([&] {
    for (FakeQueue* q : queues) {
      if (q->idle_calls() == 0) return false;
    }
    return true;
  });
}

// Rings every doorbell before |first|'s first command ends, so no greedy
// queue gets a head start in simulated time.
inline void KickTogether(FakeQueue& first, Scheduler::Handle& first_handle,
                  std::initializer_list<Scheduler::Handle*> rest) {
  first.HoldNext();
  first_handle.Kick();
  first.WaitHeld();
  for (Scheduler::Handle* handle : rest) handle->Kick();
  first.Release();
}

}  // namespace umdev::vendor::gpu::testing
