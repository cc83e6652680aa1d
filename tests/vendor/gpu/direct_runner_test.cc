// DirectRunner: kicked queues drained on its worker thread, no kick lost
// while a queue drains, detaching waits for a RunOne() in progress.
#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "umdev/common/mutex.h"
#include "umdev/vendor/gpu/direct_runner.h"

namespace umdev::vendor::gpu {
namespace {

// |pending| commands; while the gate is closed, RunOne() decides its answer
// and then waits at the gate before returning it. Thread-safe.
class FakeQueue final : public CommandQueue {
 public:
  std::optional<CommandCost> RunOne() override {
    MutexLock lock(mu_);
    thread_ = std::this_thread::get_id();
    std::optional<CommandCost> answer;
    if (pending_ > 0) {
      --pending_;
      ++ran_;
      answer = CommandCost{.bytes = 1};
    }
    ++waiting_;
    cv_.NotifyAll();
    while (!gate_open_) cv_.Wait(mu_);
    --waiting_;
    returned_ = true;
    cv_.NotifyAll();
    return answer;
  }

  void Add(int n) {
    MutexLock lock(mu_);
    pending_ += n;
  }
  void SetGate(bool open) {
    MutexLock lock(mu_);
    gate_open_ = open;
    cv_.NotifyAll();
  }
  void WaitForWaiter() {
    MutexLock lock(mu_);
    while (waiting_ == 0) cv_.Wait(mu_);
  }
  // Waits until |n| commands ran; false after 10 s.
  bool WaitRan(int n) {
    MutexLock lock(mu_);
    for (int i = 0; i < 1000 && ran_ < n; ++i) cv_.WaitFor(mu_, std::chrono::milliseconds(10));
    return ran_ >= n;
  }
  int ran() const {
    MutexLock lock(mu_);
    return ran_;
  }
  bool returned() const {
    MutexLock lock(mu_);
    return returned_;
  }
  std::thread::id thread() const {
    MutexLock lock(mu_);
    return thread_;
  }

 private:
  mutable Mutex mu_;
  CondVar cv_;
  int pending_ UMDEV_GUARDED_BY(mu_) = 0;
  int ran_ UMDEV_GUARDED_BY(mu_) = 0;
  int waiting_ UMDEV_GUARDED_BY(mu_) = 0;
  bool gate_open_ UMDEV_GUARDED_BY(mu_) = true;
  bool returned_ UMDEV_GUARDED_BY(mu_) = false;
  std::thread::id thread_ UMDEV_GUARDED_BY(mu_);
};

TEST(DirectRunnerTest, AKickedQueueIsDrainedOnTheWorkerThread) {
  DirectRunner runner;
  FakeQueue a, b;
  auto ha = *runner.Attach(&a, 500);
  auto hb = *runner.Attach(&b, 500);
  a.Add(5);
  b.Add(3);
  ha->Kick();
  hb->Kick();
  EXPECT_TRUE(a.WaitRan(5));
  EXPECT_TRUE(b.WaitRan(3));
  EXPECT_NE(a.thread(), std::this_thread::get_id());
  // Work without a kick is not looked at.
  a.Add(1);
  ha.reset();
  EXPECT_EQ(a.ran(), 5);
}

TEST(DirectRunnerTest, AKickWhileTheQueueDrainsIsNotLost) {
  DirectRunner runner;
  FakeQueue q;
  auto h = *runner.Attach(&q, 1000);
  q.SetGate(false);
  h->Kick();
  q.WaitForWaiter();  // RunOne() has decided "idle" and waits to return it.
  q.Add(1);
  h->Kick();
  q.SetGate(true);
  EXPECT_TRUE(q.WaitRan(1));
}

TEST(DirectRunnerTest, DetachWaitsForTheRunOneInProgress) {
  DirectRunner runner;
  FakeQueue q;
  auto h = *runner.Attach(&q, 1000);
  q.Add(1);
  q.SetGate(false);
  h->Kick();
  q.WaitForWaiter();
  std::atomic<bool> detached{false};
  std::thread detacher([&] {
    h.reset();
    EXPECT_TRUE(q.returned());
    detached = true;
  });
  EXPECT_FALSE(detached.load());  // Holds while RunOne() waits at the gate.
  q.SetGate(true);
  detacher.join();
  EXPECT_TRUE(detached.load());
}

}  // namespace
}  // namespace umdev::vendor::gpu
