// The GPU scheduler's interface: names, arguments, the doorbell, statistics,
// detaching and destruction in every order, and real threads at once (the
// part TSan checks). Fake queues on a simulated clock (scheduler_test_util.h).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "scheduler_test_util.h"

namespace umdev::vendor::gpu {
namespace {

using namespace testing;  // NOLINT: the scheduler fakes.

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

// A long COPY or FILL runs in pieces: each charges its time and bytes, and
// only the piece that completes the command counts it.
TEST_P(EveryPolicyTest, PiecesOfACommandCountOnceButChargeEachPiece) {
  auto clock = std::make_shared<FakeClock>();
  auto scheduler = MakeScheduler(GetParam(), clock);
  FakeQueue queue(0, clock.get());
  Scheduler::Handle handle = AttachOk(*scheduler, queue, 1000);
  CommandCost piece = Cost(microseconds(40), 1 << 20);
  piece.partial = true;
  queue.Push(piece, 3);
  queue.Push(Cost(microseconds(10), 4096));
  handle.Kick();
  ASSERT_TRUE(WaitFor([&] { return handle.Stats().yielded >= 1 && queue.ran() == 4; }));
  const QueueStats stats = handle.Stats();
  EXPECT_EQ(stats.busy, microseconds(130));
  EXPECT_EQ(stats.commands, 1u);
  EXPECT_EQ(stats.errors, 0u);
  EXPECT_EQ(stats.bytes, 3u * (1 << 20) + 4096);
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
