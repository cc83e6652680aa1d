// DirectRunner: runs attached CommandQueues on one worker thread, each queue
// drained until idle when kicked. No shares are enforced and no statistics
// kept; parents use SchedulerRunner, tests may use this one.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <thread>

#include "umdev/common/mutex.h"
#include "umdev/vendor/gpu/queue_runner.h"

namespace umdev::vendor::gpu {

// Thread-safe: devices attach, kick and detach from transport threads; one
// worker thread calls RunOne().
class DirectRunner final : public QueueRunner {
 public:
  DirectRunner();
  ~DirectRunner() override;  // Every attachment must be gone.
  DirectRunner(const DirectRunner&) = delete;
  DirectRunner& operator=(const DirectRunner&) = delete;

  // |queue| must outlive the returned handle, whose destruction detaches it
  // and waits for a RunOne() of it in progress. |share_permille| is
  // recorded but not enforced. Never fails.
  Result<std::unique_ptr<QueueAttachment>> Attach(CommandQueue* queue,
                                                  uint32_t share_permille) override;

 private:
  struct Entry {
    CommandQueue* queue = nullptr;
    uint32_t share_permille = 0;
    bool kicked = false;
  };
  class Handle;

  void Kick(Entry* entry) UMDEV_EXCLUDES(mu_);
  void Detach(Entry* entry) UMDEV_EXCLUDES(mu_);
  void WorkerLoop() UMDEV_EXCLUDES(mu_);

  Mutex mu_;
  CondVar cv_;
  std::list<Entry> entries_ UMDEV_GUARDED_BY(mu_);
  Entry* running_ UMDEV_GUARDED_BY(mu_) = nullptr;
  bool stop_ UMDEV_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

}  // namespace umdev::vendor::gpu
