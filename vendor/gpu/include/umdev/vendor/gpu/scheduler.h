// Scheduler: one per parent; shares one engine's time among the command
// queues of its instances under a vGPU-style policy, one command at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>
#include <thread>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/vendor/gpu/command_queue.h"
#include "umdev/vendor/gpu/queue_runner.h"

namespace umdev::vendor::gpu {

// The three policies NVIDIA vGPU offers (docs/gpu-scheduler.md).
enum class SchedulingPolicy {
  // Round robin over queues with work; idle capacity goes to whoever has work.
  kBestEffort,
  // Each of the N attached queues may use 1/N of device time, busy or not.
  kEqualShare,
  // Each queue may use its share_permille of device time, whatever N is.
  kFixedShare,
};

// "best_effort", "equal_share", "fixed_share" (also accepted with '-').
// Anything else: EINVAL.
Result<SchedulingPolicy> ParseSchedulingPolicy(std::string_view name);
std::string_view FormatSchedulingPolicy(SchedulingPolicy policy);

// The scheduler's notion of wall-clock time. Thread-safe. Tests inject a fake
// one so no assertion depends on real timing.
class SchedulerClock {
 public:
  virtual ~SchedulerClock() = default;
  // Monotonic time since an arbitrary epoch.
  virtual std::chrono::nanoseconds Now() = 0;
  // Waits on |cv| until Now() >= |deadline| or |cv| is notified; may return
  // early. Called with |mu| held, which it must release while waiting.
  virtual void WaitUntil(Mutex& mu, CondVar& cv, std::chrono::nanoseconds deadline)
      UMDEV_REQUIRES(mu) = 0;
};

// std::chrono::steady_clock.
std::shared_ptr<SchedulerClock> SteadySchedulerClock();

struct SchedulerOptions {
  SchedulingPolicy policy = SchedulingPolicy::kBestEffort;
  // The longest turn a queue gets while others wait, plus the command that
  // crosses it (commands are never interrupted). Also the share policies'
  // burst allowance for a queue that was idle.
  std::chrono::microseconds time_slice{2000};
  // Null: SteadySchedulerClock().
  std::shared_ptr<SchedulerClock> clock;
};

class Scheduler;

namespace scheduler_internal {
struct Core;
struct Entry;
}  // namespace scheduler_internal

// Thread-safe. Devices attach, kick and detach from any thread; one worker
// thread owned by the scheduler calls RunOne(), never with a lock held.
class Scheduler {
 public:
  // A queue's membership. Move-only; destroying it detaches. It may outlive
  // the Scheduler (Kick then does nothing).
  class Handle {
   public:
    Handle();
    ~Handle();
    Handle(Handle&& other) noexcept;
    Handle& operator=(Handle&& other) noexcept;
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;

    // The doorbell: the queue may have work. Never blocks on a command and
    // never calls RunOne() itself.
    void Kick();
    QueueStats Stats() const;
    // Stops scheduling the queue and waits until its command in progress, if
    // any, has returned; afterwards RunOne() is never called again, so the
    // queue may be destroyed. Idempotent. Called from inside a RunOne() it
    // cannot wait: RunOne() is then not called again once that one returns.
    void Detach();
    bool attached() const;

   private:
    friend class Scheduler;
    Handle(std::shared_ptr<scheduler_internal::Core> core,
           std::shared_ptr<scheduler_internal::Entry> entry);

    std::shared_ptr<scheduler_internal::Core> core_;
    std::shared_ptr<scheduler_internal::Entry> entry_;
  };

  // time_slice not positive: EINVAL.
  static Result<std::unique_ptr<Scheduler>> Create(SchedulerOptions options);
  // Stops the worker after the command in progress; handles still attached
  // stay valid but their queues are never run again.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Adds |queue| (which must outlive the handle's attachment), idle until
  // its first Kick(). |share_permille| (1..1000, else EINVAL) is the
  // queue's share under fixed share and ignored otherwise; under fixed
  // share the attached shares may sum to at most 1000 (ENOSPC beyond).
  // Null queue: EINVAL.
  Result<Handle> Attach(CommandQueue* queue, uint32_t share_permille);

  SchedulingPolicy policy() const;
  std::chrono::microseconds time_slice() const;
  // Queues attached and not detaching.
  size_t attached_count() const;

 private:
  explicit Scheduler(std::shared_ptr<scheduler_internal::Core> core);

  std::shared_ptr<scheduler_internal::Core> core_;
  std::thread worker_;
};

}  // namespace umdev::vendor::gpu
