// DirectRunner: one worker thread draining kicked queues in turn.
#include "umdev/vendor/gpu/direct_runner.h"

#include <algorithm>

namespace umdev::vendor::gpu {

class DirectRunner::Handle final : public QueueAttachment {
 public:
  Handle(DirectRunner& runner, Entry* entry) : runner_(runner), entry_(entry) {}
  ~Handle() override { runner_.Detach(entry_); }
  void Kick() override { runner_.Kick(entry_); }

 private:
  DirectRunner& runner_;
  Entry* const entry_;
};

DirectRunner::DirectRunner() : worker_([this] { WorkerLoop(); }) {}

DirectRunner::~DirectRunner() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.NotifyAll();
  worker_.join();
}

Result<std::unique_ptr<QueueAttachment>> DirectRunner::Attach(CommandQueue* queue,
                                                              uint32_t share_permille) {
  MutexLock lock(mu_);
  entries_.push_back(Entry{.queue = queue, .share_permille = share_permille});
  return std::unique_ptr<QueueAttachment>(std::make_unique<Handle>(*this, &entries_.back()));
}

void DirectRunner::Kick(Entry* entry) {
  {
    MutexLock lock(mu_);
    entry->kicked = true;
  }
  cv_.NotifyAll();
}

void DirectRunner::Detach(Entry* entry) {
  MutexLock lock(mu_);
  while (running_ == entry) cv_.Wait(mu_);
  entries_.remove_if([entry](const Entry& e) { return &e == entry; });
}

void DirectRunner::WorkerLoop() {
  MutexLock lock(mu_);
  while (true) {
    Entry* next = nullptr;
    for (Entry& e : entries_) {
      if (e.kicked) {
        next = &e;
        break;
      }
    }
    if (next == nullptr) {
      if (stop_) return;
      cv_.Wait(mu_);
      continue;
    }
    // Cleared before running: a kick that arrives while it drains is seen
    // on the next pass, so no doorbell is lost.
    next->kicked = false;
    running_ = next;
    // Round robin at queue granularity: move it to the back.
    entries_.splice(entries_.end(), entries_, std::find_if(entries_.begin(), entries_.end(),
                                                           [next](const Entry& e) {
                                                             return &e == next;
                                                           }));
    CommandQueue* queue = next->queue;
    mu_.Unlock();
    while (queue->RunOne().has_value()) {
    }
    mu_.Lock();
    running_ = nullptr;
    cv_.NotifyAll();
  }
}

}  // namespace umdev::vendor::gpu
