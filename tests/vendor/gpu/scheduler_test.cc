// The GPU scheduler against fake command queues whose commands report
// synthetic costs and advance a fake clock, so every share, order and bound
// asserted here is computed in simulated time and no test depends on timing.
#include "umdev/vendor/gpu/scheduler.h"

#include <atomic>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <string>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace umdev::vendor::gpu {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

constexpr microseconds kSlice{2000};

// Bounded polling for a condition the scheduler thread brings about.
bool WaitFor(const std::function<bool()>& condition) {
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

CommandCost Cost(nanoseconds busy, uint64_t bytes = 0, bool failed = false) {
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

std::unique_ptr<Scheduler> MakeScheduler(SchedulingPolicy policy,
                                         std::shared_ptr<FakeClock> clock) {
  auto scheduler = Scheduler::Create({.policy = policy, .time_slice = kSlice, .clock = clock});
  EXPECT_TRUE(scheduler.has_value());
  return std::move(scheduler).value();
}

Scheduler::Handle AttachOk(Scheduler& scheduler, CommandQueue& queue, uint32_t share) {
  auto handle = scheduler.Attach(&queue, share);
  EXPECT_TRUE(handle.has_value()) << handle.error().Describe();
  return std::move(handle).value();
}

double Fraction(nanoseconds part, nanoseconds whole) {
  return static_cast<double>(part.count()) / static_cast<double>(whole.count());
}

// ---- names and arguments ----

TEST(SchedulingPolicyTest, ParsesAndFormatsTheVgpuNames) {
  for (auto policy : {SchedulingPolicy::kBestEffort, SchedulingPolicy::kEqualShare,
                      SchedulingPolicy::kFixedShare}) {
    auto parsed = ParseSchedulingPolicy(FormatSchedulingPolicy(policy));
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, policy);
  }
  EXPECT_EQ(FormatSchedulingPolicy(SchedulingPolicy::kFixedShare), "fixed_share");
  EXPECT_EQ(ParseSchedulingPolicy("equal-share"), SchedulingPolicy::kEqualShare);
  auto unknown = ParseSchedulingPolicy("round_robin");
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code, EINVAL);
  EXPECT_FALSE(ParseSchedulingPolicy("").has_value());
}

TEST(SchedulerTest, RefusesANonPositiveTimeSlice) {
  for (auto slice : {microseconds(0), microseconds(-5)}) {
    auto scheduler = Scheduler::Create({.time_slice = slice});
    ASSERT_FALSE(scheduler.has_value());
    EXPECT_EQ(scheduler.error().code, EINVAL);
  }
  auto scheduler = Scheduler::Create({.policy = SchedulingPolicy::kEqualShare});
  ASSERT_TRUE(scheduler.has_value());
  EXPECT_EQ((*scheduler)->policy(), SchedulingPolicy::kEqualShare);
  EXPECT_EQ((*scheduler)->time_slice(), microseconds(2000));
}

TEST(SchedulerTest, AttachRefusesBadQueuesAndShares) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(SchedulingPolicy::kBestEffort, clock);
  FakeQueue queue(0, clock.get());
  EXPECT_EQ(scheduler->Attach(nullptr, 100).error().code, EINVAL);
  EXPECT_EQ(scheduler->Attach(&queue, 0).error().code, EINVAL);
  EXPECT_EQ(scheduler->Attach(&queue, 1001).error().code, EINVAL);
  EXPECT_EQ(scheduler->attached_count(), 0u);
}

TEST(SchedulerTest, FixedSharesCannotExceedTheWholeDevice) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(SchedulingPolicy::kFixedShare, clock);
  FakeQueue a(0, clock.get()), b(1, clock.get()), c(2, clock.get());
  Scheduler::Handle ha = AttachOk(*scheduler, a, 600);
  auto over = scheduler->Attach(&b, 401);
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code, ENOSPC);
  Scheduler::Handle hb = AttachOk(*scheduler, b, 400);
  EXPECT_EQ(scheduler->Attach(&c, 1).error().code, ENOSPC);
  ha.Detach();  // gives its 600 back
  Scheduler::Handle hc = AttachOk(*scheduler, c, 600);
  EXPECT_EQ(scheduler->attached_count(), 2u);
}

TEST(SchedulerTest, OtherPoliciesIgnoreTheShareSum) {
  for (auto policy : {SchedulingPolicy::kBestEffort, SchedulingPolicy::kEqualShare}) {
    auto clock = std::make_shared<FakeClock>();
    auto scheduler = MakeScheduler(policy, clock);
    FakeQueue a(0, clock.get()), b(1, clock.get());
    Scheduler::Handle ha = AttachOk(*scheduler, a, 1000);
    Scheduler::Handle hb = AttachOk(*scheduler, b, 1000);
    EXPECT_EQ(scheduler->attached_count(), 2u);
  }
}

// ---- doorbell, stats, lifetime ----

std::string PolicyName(const ::testing::TestParamInfo<SchedulingPolicy>& param_info) {
  return std::string(FormatSchedulingPolicy(param_info.param));
}

class EveryPolicyTest : public ::testing::TestWithParam<SchedulingPolicy> {};

INSTANTIATE_TEST_SUITE_P(Policies, EveryPolicyTest,
                         ::testing::Values(SchedulingPolicy::kBestEffort,
                                           SchedulingPolicy::kEqualShare,
                                           SchedulingPolicy::kFixedShare),
                         PolicyName);

TEST_P(EveryPolicyTest, KickOnAnIdleSchedulerRunsTheQueue) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(GetParam(), clock);
  FakeQueue queue(0, clock.get());
  Scheduler::Handle handle = AttachOk(*scheduler, queue, 500);
  queue.Push(Cost(microseconds(10)), 3);
  // Not kicked: the scheduler does not poll queues.
  EXPECT_EQ(queue.ran(), 0u);
  handle.Kick();
  ASSERT_TRUE(WaitFor([&] { return handle.Stats().commands == 3; }));
  ASSERT_TRUE(WaitFor([&] { return handle.Stats().yielded == 1; }));
  EXPECT_EQ(queue.ran(), 3u);

  // Idle again; a second doorbell is answered the same way.
  queue.Push(Cost(microseconds(10)), 2);
  handle.Kick();
  ASSERT_TRUE(WaitFor([&] { return handle.Stats().commands == 5; }));
}

TEST_P(EveryPolicyTest, StatsCountBusyTimeBytesAndFailedCommands) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(GetParam(), clock);
  FakeQueue queue(0, clock.get());
  Scheduler::Handle handle = AttachOk(*scheduler, queue, 1000);
  queue.Push(Cost(microseconds(100), 4096));
  queue.Push(Cost(microseconds(30), 0, /*failed=*/true));
  queue.Push(Cost(microseconds(50), 64));
  handle.Kick();
  ASSERT_TRUE(WaitFor([&] { return handle.Stats().yielded >= 1 && queue.ran() == 3; }));
  const QueueStats stats = handle.Stats();
  EXPECT_EQ(stats.busy, microseconds(180));
  EXPECT_EQ(stats.commands, 2u);
  EXPECT_EQ(stats.errors, 1u);
  EXPECT_EQ(stats.bytes, 4160u);
  EXPECT_EQ(stats.preempted, 0u);
}

TEST_P(EveryPolicyTest, AKickDuringAnIdleAnswerIsNotLost) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(GetParam(), clock);
  FakeQueue queue(0, clock.get());
  Scheduler::Handle handle = AttachOk(*scheduler, queue, 1000);
  // The guest rings the doorbell just as the device answers "idle": the
  // command it queued must still run.
  bool rang = false;
  queue.OnIdle([&] {
    if (rang) return;
    rang = true;
    queue.Push(Cost(microseconds(10)));
    handle.Kick();
  });
  handle.Kick();
  ASSERT_TRUE(WaitFor([&] { return handle.Stats().commands == 1; }));
}

TEST_P(EveryPolicyTest, DetachWaitsForTheRunningCommand) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(GetParam(), clock);
  auto queue = std::make_unique<FakeQueue>(0, clock.get());
  FakeQueue other(1, clock.get());
  Scheduler::Handle handle = AttachOk(*scheduler, *queue, 500);
  Scheduler::Handle other_handle = AttachOk(*scheduler, other, 500);
  queue->Push(Cost(microseconds(10)), 5);
  queue->HoldNext();
  handle.Kick();
  queue->WaitHeld();

  std::atomic<bool> detached{false};
  std::thread detacher([&] {
    handle.Detach();
    detached = true;
  });
  // Detach has unlisted the queue; it is still waiting for the command.
  ASSERT_TRUE(WaitFor([&] { return scheduler->attached_count() == 1; }));
  EXPECT_TRUE(queue->running());
  EXPECT_FALSE(detached.load());
  queue->Release();
  detacher.join();
  EXPECT_FALSE(queue->running());
  const uint64_t ran = queue->ran();
  EXPECT_EQ(ran, 1u);  // the turn ended with the detach
  queue.reset();        // the device may go now
  EXPECT_FALSE(handle.attached());
  handle.Kick();  // harmless after detach

  // The scheduler goes on serving the others.
  other.Push(Cost(microseconds(10)), 2);
  other_handle.Kick();
  ASSERT_TRUE(WaitFor([&] { return other_handle.Stats().commands == 2; }));
}

TEST_P(EveryPolicyTest, AQueueMayDetachItselfFromInsideRunOne) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(GetParam(), clock);
  FakeQueue queue(0, clock.get()), other(1, clock.get());
  Scheduler::Handle handle = AttachOk(*scheduler, queue, 500);
  Scheduler::Handle other_handle = AttachOk(*scheduler, other, 500);
  queue.Push(Cost(microseconds(10)), 5);
  queue.OnCommand([&](uint64_t n) {
    if (n == 1) handle.Detach();  // must not wait for itself
  });
  handle.Kick();
  ASSERT_TRUE(WaitFor([&] { return !handle.attached(); }));
  // The worker moved on: it serves the other queue, never this one again.
  other.Push(Cost(microseconds(10)));
  other_handle.Kick();
  ASSERT_TRUE(WaitFor([&] { return other_handle.Stats().commands == 1; }));
  EXPECT_EQ(queue.ran(), 1u);
  EXPECT_EQ(scheduler->attached_count(), 1u);
}

TEST_P(EveryPolicyTest, SchedulerMayGoFirstWithQueuesAttachedAndIdle) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(GetParam(), clock);
  FakeQueue a(0, clock.get()), b(1, clock.get()), c(2, clock.get());
  Scheduler::Handle ha = AttachOk(*scheduler, a, 300);
  Scheduler::Handle hb = AttachOk(*scheduler, b, 300);
  Scheduler::Handle hc = AttachOk(*scheduler, c, 300);
  a.Push(Cost(microseconds(10)));
  ha.Kick();
  ASSERT_TRUE(WaitFor([&] { return ha.Stats().yielded == 1; }));
  scheduler.reset();
  // The handles outlive it: stats stay readable, kicks and detach are no-ops.
  EXPECT_EQ(ha.Stats().commands, 1u);
  b.Push(Cost(microseconds(10)));
  hb.Kick();
  EXPECT_EQ(b.ran(), 0u);
  hc.Detach();
  EXPECT_FALSE(hc.attached());
}

TEST_P(EveryPolicyTest, HandlesMayGoFirst) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(GetParam(), clock);
  {
    FakeQueue a(0, clock.get()), b(1, clock.get());
    Scheduler::Handle ha = AttachOk(*scheduler, a, 300);
    Scheduler::Handle hb = AttachOk(*scheduler, b, 300);
    EXPECT_EQ(scheduler->attached_count(), 2u);
  }
  EXPECT_EQ(scheduler->attached_count(), 0u);
}

TEST_P(EveryPolicyTest, DestroyingTheSchedulerWaitsForTheRunningCommand) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(GetParam(), clock);
  FakeQueue queue(0, clock.get());
  Scheduler::Handle handle = AttachOk(*scheduler, queue, 500);
  queue.Push(Cost(microseconds(10)), 10);
  queue.HoldNext();
  handle.Kick();
  queue.WaitHeld();
  std::thread destroyer([&] { scheduler.reset(); });
  queue.Release();
  destroyer.join();
  // Stopped at a command boundary, and nothing runs any more.
  EXPECT_FALSE(queue.running());
  const uint64_t ran = queue.ran();
  EXPECT_GE(ran, 1u);
  EXPECT_EQ(handle.Stats().commands, ran);
  handle.Kick();
  EXPECT_EQ(queue.ran(), ran);
}

TEST(SchedulerHandleTest, DefaultAndMovedFromHandlesAreInert) {
  Scheduler::Handle empty;
  empty.Kick();
  empty.Detach();
  EXPECT_FALSE(empty.attached());
  EXPECT_EQ(empty.Stats().commands, 0u);

  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(SchedulingPolicy::kBestEffort, clock);
  FakeQueue queue(0, clock.get());
  Scheduler::Handle first = AttachOk(*scheduler, queue, 100);
  Scheduler::Handle second = std::move(first);
  EXPECT_FALSE(first.attached());  // NOLINT(bugprone-use-after-move): the point.
  EXPECT_TRUE(second.attached());
  queue.Push(Cost(microseconds(10)));
  second.Kick();
  ASSERT_TRUE(WaitFor([&] { return second.Stats().commands == 1; }));
  second = Scheduler::Handle();  // detaches
  EXPECT_EQ(scheduler->attached_count(), 0u);
}

// ---- order, shares, bounds ----

// Rings every doorbell before |first|'s first command ends, so no greedy
// queue gets a head start in simulated time.
void KickTogether(FakeQueue& first, Scheduler::Handle& first_handle,
                  std::initializer_list<Scheduler::Handle*> rest) {
  first.HoldNext();
  first_handle.Kick();
  first.WaitHeld();
  for (Scheduler::Handle* handle : rest) handle->Kick();
  first.Release();
}

// Waits until every queue in |queues| has answered "idle" once, which greedy
// queues do only after the clock passed their end.
bool WaitAllIdle(std::initializer_list<FakeQueue*> queues) {
  return WaitFor([&] {
    for (FakeQueue* q : queues) {
      if (q->idle_calls() == 0) return false;
    }
    return true;
  });
}

TEST(BestEffortTest, QueuesWithWorkTakeTurnsInAttachOrder) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(SchedulingPolicy::kBestEffort, clock);
  RunLog log;
  FakeQueue a(0, clock.get(), &log), b(1, clock.get(), &log), c(2, clock.get(), &log);
  Scheduler::Handle ha = AttachOk(*scheduler, a, 100);
  Scheduler::Handle hb = AttachOk(*scheduler, b, 100);
  Scheduler::Handle hc = AttachOk(*scheduler, c, 100);
  // Each command uses a whole slice, so each turn is one command.
  for (FakeQueue* q : {&a, &b, &c}) q->Push(Cost(kSlice), 4);
  a.HoldNext();
  ha.Kick();
  a.WaitHeld();  // all three have work before the first command ends
  hb.Kick();
  hc.Kick();
  a.Release();
  ASSERT_TRUE(WaitAllIdle({&a, &b, &c}));
  EXPECT_EQ(log.Snapshot(), (std::vector<int>{0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2}));
  for (auto* h : {&ha, &hb, &hc}) {
    EXPECT_EQ(h->Stats().preempted, 4u);
    EXPECT_EQ(h->Stats().yielded, 1u);
    EXPECT_EQ(h->Stats().throttled, 0u);
  }
}

TEST(BestEffortTest, GreedyQueuesSplitTheDeviceAndIdleOnesGetNothing) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(SchedulingPolicy::kBestEffort, clock);
  FakeQueue a(0, clock.get()), b(1, clock.get()), idle(2, clock.get());
  Scheduler::Handle ha = AttachOk(*scheduler, a, 100);
  Scheduler::Handle hb = AttachOk(*scheduler, b, 100);
  Scheduler::Handle hi = AttachOk(*scheduler, idle, 800);
  // Time, not command count, is shared: B's commands are 3x longer.
  a.Greedy(Cost(microseconds(100)), milliseconds(1000));
  b.Greedy(Cost(microseconds(300)), milliseconds(1000));
  KickTogether(a, ha, {&hb});
  ASSERT_TRUE(WaitAllIdle({&a, &b}));
  const nanoseconds elapsed = clock->Now();
  const QueueStats sa = ha.Stats(), sb = hb.Stats();
  // Work-conserving: the device never idled while someone had work.
  EXPECT_EQ(sa.busy + sb.busy, elapsed);
  EXPECT_NEAR(Fraction(sa.busy, elapsed), 0.5, 0.03);
  EXPECT_NEAR(Fraction(sb.busy, elapsed), 0.5, 0.03);
  EXPECT_EQ(hi.Stats().busy, nanoseconds(0));
  EXPECT_GT(sa.preempted, 100u);
  EXPECT_GT(sb.preempted, 100u);
}

TEST(BestEffortTest, AnOverrunningQueueIsNotMadeToPayBack) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(SchedulingPolicy::kBestEffort, clock);
  FakeQueue big(0, clock.get()), small(1, clock.get());
  Scheduler::Handle hbig = AttachOk(*scheduler, big, 100);
  Scheduler::Handle hsmall = AttachOk(*scheduler, small, 100);
  // 5 ms commands against a 2 ms slice: each turn of |big| is one 5 ms
  // command, each turn of |small| 2 ms, so big gets 5/7.
  big.Greedy(Cost(milliseconds(5)), milliseconds(1000));
  small.Greedy(Cost(microseconds(100)), milliseconds(1000));
  KickTogether(big, hbig, {&hsmall});
  ASSERT_TRUE(WaitAllIdle({&big, &small}));
  EXPECT_NEAR(Fraction(hbig.Stats().busy, clock->Now()), 5.0 / 7.0, 0.03);
}

TEST(EqualShareTest, EachAttachedQueueGetsOneNthEvenWhenOthersIdle) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(SchedulingPolicy::kEqualShare, clock);
  FakeQueue a(0, clock.get()), b(1, clock.get()), idle(2, clock.get());
  Scheduler::Handle ha = AttachOk(*scheduler, a, 100);
  Scheduler::Handle hb = AttachOk(*scheduler, b, 100);
  Scheduler::Handle hi = AttachOk(*scheduler, idle, 100);
  a.Greedy(Cost(microseconds(100)), milliseconds(1200));
  b.Greedy(Cost(microseconds(300)), milliseconds(1200));
  KickTogether(a, ha, {&hb});
  ASSERT_TRUE(WaitAllIdle({&a, &b}));
  const nanoseconds elapsed = clock->Now();
  const QueueStats sa = ha.Stats(), sb = hb.Stats();
  EXPECT_NEAR(Fraction(sa.busy, elapsed), 1.0 / 3.0, 0.02);
  EXPECT_NEAR(Fraction(sb.busy, elapsed), 1.0 / 3.0, 0.02);
  // The idle third is not handed out: each stays within its share plus
  // the bucket (a slice) and one command.
  for (const QueueStats& s : {sa, sb}) {
    EXPECT_LE(s.busy, elapsed / 3 + kSlice + microseconds(300));
    EXPECT_GT(s.throttled, 0u);
  }
  EXPECT_EQ(hi.Stats().busy, nanoseconds(0));
}

TEST(EqualShareTest, TheShareFollowsTheNumberOfAttachedQueues) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(SchedulingPolicy::kEqualShare, clock);
  FakeQueue a(0, clock.get()), other(1, clock.get());
  Scheduler::Handle ha = AttachOk(*scheduler, a, 100);

  // Alone: the whole device.
  a.Greedy(Cost(microseconds(100)), milliseconds(100));
  ha.Kick();
  ASSERT_TRUE(WaitAllIdle({&a}));
  const nanoseconds alone_end = clock->Now();
  EXPECT_GE(Fraction(ha.Stats().busy, alone_end), 0.99);

  // A second, idle tenant halves it.
  Scheduler::Handle ho = AttachOk(*scheduler, other, 100);
  const nanoseconds busy_before = ha.Stats().busy;
  const uint64_t idle_before = a.idle_calls();
  a.Greedy(Cost(microseconds(100)), alone_end + milliseconds(400));
  ha.Kick();
  ASSERT_TRUE(WaitFor([&] { return a.idle_calls() > idle_before; }));
  EXPECT_NEAR(Fraction(ha.Stats().busy - busy_before, clock->Now() - alone_end), 0.5, 0.02);
  EXPECT_EQ(ho.Stats().busy, nanoseconds(0));
}

TEST(EqualShareTest, AnOverrunningQueuePaysItBack) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(SchedulingPolicy::kEqualShare, clock);
  FakeQueue big(0, clock.get()), small(1, clock.get());
  Scheduler::Handle hbig = AttachOk(*scheduler, big, 100);
  Scheduler::Handle hsmall = AttachOk(*scheduler, small, 100);
  // The same load as BestEffortTest.AnOverrunningQueueIsNotMadeToPayBack:
  // here the 3 ms each big command runs over its slice is paid back.
  big.Greedy(Cost(milliseconds(5)), milliseconds(1000));
  small.Greedy(Cost(microseconds(100)), milliseconds(1000));
  KickTogether(big, hbig, {&hsmall});
  ASSERT_TRUE(WaitAllIdle({&big, &small}));
  const nanoseconds elapsed = clock->Now();
  EXPECT_NEAR(Fraction(hbig.Stats().busy, elapsed), 0.5, 0.03);
  EXPECT_NEAR(Fraction(hsmall.Stats().busy, elapsed), 0.5, 0.03);
}

TEST(FixedShareTest, BusyQueuesGetTheirConfiguredShares) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(SchedulingPolicy::kFixedShare, clock);
  FakeQueue a(0, clock.get()), b(1, clock.get()), idle(2, clock.get());
  Scheduler::Handle ha = AttachOk(*scheduler, a, 500);
  Scheduler::Handle hb = AttachOk(*scheduler, b, 250);
  Scheduler::Handle hi = AttachOk(*scheduler, idle, 250);
  a.Greedy(Cost(microseconds(100)), milliseconds(1000));
  b.Greedy(Cost(microseconds(300)), milliseconds(1000));
  KickTogether(a, ha, {&hb});
  ASSERT_TRUE(WaitAllIdle({&a, &b}));
  const nanoseconds elapsed = clock->Now();
  EXPECT_NEAR(Fraction(ha.Stats().busy, elapsed), 0.50, 0.02);
  EXPECT_NEAR(Fraction(hb.Stats().busy, elapsed), 0.25, 0.02);
  EXPECT_EQ(hi.Stats().busy, nanoseconds(0));
}

TEST(FixedShareTest, AQueueNeverExceedsItsShareWhileTheRestIdles) {
  for (int others : {0, 2}) {
    SCOPED_TRACE(others);
    auto clock = std::make_shared<FakeClock>();
    auto scheduler = MakeScheduler(SchedulingPolicy::kFixedShare, clock);
    FakeQueue a(0, clock.get()), b(1, clock.get()), c(2, clock.get());
    Scheduler::Handle ha = AttachOk(*scheduler, a, 250);
    std::vector<Scheduler::Handle> idle_handles;
    for (FakeQueue* q : {&b, &c}) {
      if (static_cast<int>(idle_handles.size()) < others) {
        idle_handles.push_back(AttachOk(*scheduler, *q, 250));
      }
    }
    constexpr microseconds kCommand{100};
    a.Greedy(Cost(kCommand), milliseconds(1000));
    ha.Kick();
    ASSERT_TRUE(WaitAllIdle({&a}));
    const nanoseconds elapsed = clock->Now();
    const QueueStats stats = ha.Stats();
    // The cap holds at every point; at the end it is share * elapsed plus
    // the bucket (one slice) plus the command that crossed it.
    EXPECT_LE(stats.busy, elapsed / 4 + kSlice + kCommand);
    EXPECT_NEAR(Fraction(stats.busy, elapsed), 0.25, 0.01);
    EXPECT_GT(stats.throttled, 0u);
  }
}

class StarvationTest : public EveryPolicyTest {};

INSTANTIATE_TEST_SUITE_P(Policies, StarvationTest,
                         ::testing::Values(SchedulingPolicy::kBestEffort,
                                           SchedulingPolicy::kEqualShare,
                                           SchedulingPolicy::kFixedShare),
                         PolicyName);

// The bound of docs/gpu.md: a queue that gets work while others are greedy
// runs after at most one turn of each other queue, a turn being at most a
// slice plus the command that crosses it.
TEST_P(StarvationTest, ANewlyBusyQueueRunsWithinOneTurnOfEachOther) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(GetParam(), clock);
  RunLog log;
  FakeQueue greedy1(0, clock.get(), &log), late(1, clock.get(), &log),
      greedy2(2, clock.get(), &log);
  Scheduler::Handle h1 = AttachOk(*scheduler, greedy1, 400);
  Scheduler::Handle hl = AttachOk(*scheduler, late, 200);
  Scheduler::Handle h2 = AttachOk(*scheduler, greedy2, 400);
  constexpr microseconds kCommand{100};
  constexpr size_t kTurn = kSlice / kCommand;  // commands per full turn
  greedy1.Greedy(Cost(kCommand), milliseconds(300));
  greedy2.Greedy(Cost(kCommand), milliseconds(300));
  late.Push(Cost(kCommand));
  // The doorbell rings in the middle of greedy1's 100th command.
  size_t kicked_at = 0;
  greedy1.OnCommand([&](uint64_t n) {
    if (n != 100) return;
    kicked_at = log.Snapshot().size();
    hl.Kick();
  });
  KickTogether(greedy1, h1, {&h2});
  ASSERT_TRUE(WaitAllIdle({&greedy1, &greedy2}));
  const std::vector<int> order = log.Snapshot();
  const auto late_at = std::find(order.begin(), order.end(), 1);
  ASSERT_NE(late_at, order.end());
  const size_t waited = static_cast<size_t>(late_at - order.begin()) - kicked_at;
  EXPECT_LE(waited, 2 * kTurn);
}

// With three greedy queues, no queue ever waits for more than one turn of
// each of the others between two of its commands.
TEST_P(StarvationTest, GreedyQueuesNeverWaitMoreThanARound) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(GetParam(), clock);
  RunLog log;
  FakeQueue q0(0, clock.get(), &log), q1(1, clock.get(), &log), q2(2, clock.get(), &log);
  Scheduler::Handle h0 = AttachOk(*scheduler, q0, 400);
  Scheduler::Handle h1 = AttachOk(*scheduler, q1, 200);
  Scheduler::Handle h2 = AttachOk(*scheduler, q2, 400);
  constexpr microseconds kCommand{100};
  constexpr size_t kTurn = kSlice / kCommand;
  for (FakeQueue* q : {&q0, &q1, &q2}) q->Greedy(Cost(kCommand), milliseconds(300));
  KickTogether(q0, h0, {&h1, &h2});
  ASSERT_TRUE(WaitAllIdle({&q0, &q1, &q2}));
  const std::vector<int> order = log.Snapshot();
  ASSERT_GT(order.size(), 1000u);
  for (int id = 0; id < 3; ++id) {
    size_t last = 0;
    bool seen = false;
    for (size_t i = 0; i < order.size(); ++i) {
      if (order[i] != id) continue;
      if (seen) {
        EXPECT_LE(i - last - 1, 2 * kTurn) << "queue " << id << " at " << i;
      }
      last = i;
      seen = true;
    }
    EXPECT_TRUE(seen) << "queue " << id;
  }
}

// ---- real threads (this is what TSan checks) ----

TEST_P(EveryPolicyTest, DevicesKickAttachAndDetachFromManyThreads) {
  auto scheduler = Scheduler::Create({.policy = GetParam(), .time_slice = microseconds(50)});
  ASSERT_TRUE(scheduler.has_value());
  constexpr int kDevices = 3;
  constexpr int kCommands = 300;
  std::vector<std::unique_ptr<FakeQueue>> queues;
  std::vector<Scheduler::Handle> handles;
  for (int i = 0; i < kDevices; ++i) {
    queues.push_back(std::make_unique<FakeQueue>(i, nullptr));
    handles.push_back(AttachOk(**scheduler, *queues.back(), 250));
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < kDevices; ++i) {
    threads.emplace_back([&, i] {
      for (int n = 0; n < kCommands; ++n) {
        queues[i]->Push(Cost(microseconds(1), 8));
        handles[i].Kick();
      }
    });
  }
  // A device coming and going meanwhile, each time destroyed right after
  // its detach returns.
  threads.emplace_back([&] {
    for (int n = 0; n < 50; ++n) {
      auto queue = std::make_unique<FakeQueue>(9, nullptr);
      auto handle = (*scheduler)->Attach(queue.get(), 250);
      ASSERT_TRUE(handle.has_value());
      queue->Push(Cost(microseconds(1)), 3);
      handle->Kick();
      handle->Detach();
      queue.reset();
    }
  });
  for (auto& t : threads) t.join();
  for (int i = 0; i < kDevices; ++i) {
    ASSERT_TRUE(WaitFor([&] { return handles[i].Stats().commands == kCommands; }));
    EXPECT_EQ(handles[i].Stats().bytes, 8u * kCommands);
  }
}

}  // namespace
}  // namespace umdev::vendor::gpu
