// SchedulerRunner: a parent's QueueRunner backed by a Scheduler, so every
// instance's queue runs under the parent's policy and is counted.
#pragma once

#include <cstdint>
#include <memory>

#include "umdev/common/error.h"
#include "umdev/vendor/gpu/queue_runner.h"
#include "umdev/vendor/gpu/scheduler.h"

namespace umdev::vendor::gpu {

// Thread-safe (the Scheduler's guarantees).
class SchedulerRunner final : public QueueRunner {
 public:
  // Scheduler::Create()'s errors.
  static Result<std::shared_ptr<SchedulerRunner>> Create(SchedulerOptions options);

  // Scheduler::Attach()'s errors: EINVAL share not 1..1000 or null queue;
  // ENOSPC fixed shares past 1000.
  Result<std::unique_ptr<QueueAttachment>> Attach(CommandQueue* queue,
                                                  uint32_t share_permille) override;

  const Scheduler& scheduler() const { return *scheduler_; }

 private:
  explicit SchedulerRunner(std::unique_ptr<Scheduler> scheduler)
      : scheduler_(std::move(scheduler)) {}

  const std::unique_ptr<Scheduler> scheduler_;
};

}  // namespace umdev::vendor::gpu
