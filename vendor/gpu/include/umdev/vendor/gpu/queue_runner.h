// QueueRunner: what runs devices' CommandQueues (DirectRunner now, a
// share-enforcing scheduler later), as the device sees it.
#pragma once

#include <cstdint>
#include <memory>

#include "umdev/vendor/gpu/command_queue.h"

namespace umdev::vendor::gpu {

// One queue's registration with a runner. Destroying it detaches the queue
// and waits for a RunOne() of it in progress. Thread-safe.
class QueueAttachment {
 public:
  virtual ~QueueAttachment() = default;
  // The queue has (or may have) work: RunOne() will be called soon on the
  // runner's thread. Never blocks and never calls RunOne() itself.
  virtual void Kick() = 0;
};

// Thread-safe.
class QueueRunner {
 public:
  virtual ~QueueRunner() = default;
  // |queue| must outlive the returned attachment. |share_permille| is the
  // compute share the queue's type guarantees (1000 = the whole device).
  virtual std::unique_ptr<QueueAttachment> Attach(CommandQueue* queue,
                                                  uint32_t share_permille) = 0;
};

}  // namespace umdev::vendor::gpu
