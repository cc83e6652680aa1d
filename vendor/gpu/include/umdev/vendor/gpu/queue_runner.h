// QueueRunner: what runs devices' CommandQueues (SchedulerRunner, or the
// share-blind DirectRunner), as the device sees it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "umdev/common/error.h"
#include "umdev/vendor/gpu/command_queue.h"

namespace umdev::vendor::gpu {

// Per-queue counters since Attach. Failed commands are charged their busy
// time and bytes and counted in |errors|, not in |commands|.
struct QueueStats {
  std::chrono::nanoseconds busy{0};  // device time charged (CommandCost::busy)
  uint64_t commands = 0;             // commands completed
  uint64_t bytes = 0;                // CommandCost::bytes, summed
  uint64_t errors = 0;               // commands that failed
  uint64_t preempted = 0;            // turns ended by the slice or share with work left
  uint64_t yielded = 0;              // turns ended because the queue ran out of work
  uint64_t throttled = 0;            // times it had work but had to wait for its share
};

// One queue's registration with a runner. Destroying it detaches the queue
// and waits for a RunOne() of it in progress. Thread-safe.
class QueueAttachment {
 public:
  virtual ~QueueAttachment() = default;
  // The queue has (or may have) work: RunOne() will be called soon on the
  // runner's thread. Never blocks and never calls RunOne() itself.
  virtual void Kick() = 0;
  // The runner's counters for the queue; all zero where it keeps none.
  virtual QueueStats Stats() const { return {}; }
};

// Thread-safe.
class QueueRunner {
 public:
  virtual ~QueueRunner() = default;
  // |queue| must outlive the returned attachment. |share_permille| is the
  // compute share the queue's type guarantees (1000 = the whole device).
  // Errors: the runner's (a scheduler: EINVAL share out of range, ENOSPC
  // fixed shares past 1000).
  virtual Result<std::unique_ptr<QueueAttachment>> Attach(CommandQueue* queue,
                                                          uint32_t share_permille) = 0;
};

}  // namespace umdev::vendor::gpu
