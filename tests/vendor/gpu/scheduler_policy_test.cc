// The GPU scheduler's policies: round-robin order, the share each queue gets
// over many commands, the caps and the starvation bounds of docs/gpu-scheduler.md,
// all computed in simulated time so no assertion depends on real timing.
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

// ---- order, shares, bounds ----

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

class StarvationTest : public ::testing::TestWithParam<SchedulingPolicy> {};

INSTANTIATE_TEST_SUITE_P(Policies, StarvationTest,
                         ::testing::Values(SchedulingPolicy::kBestEffort,
                                           SchedulingPolicy::kEqualShare,
                                           SchedulingPolicy::kFixedShare),
                         PolicyName);

// The bound of docs/gpu-scheduler.md: a queue that gets work while others are greedy
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

}  // namespace
}  // namespace umdev::vendor::gpu
