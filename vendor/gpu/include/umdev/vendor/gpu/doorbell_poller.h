// DoorbellPoller: notices doorbells that guests ring without a trap, by
// polling the doorbell pages of a parent's devices (docs/gpu.md, "The
// doorbell page"), the way SPDK's vfio-user NVMe target polls its shadow
// doorbells. One thread per parent, however many devices it has.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "umdev/common/mutex.h"

namespace umdev::vendor::gpu {

struct DoorbellPollerOptions {
  // How long a page is polled after its last activity before the poller
  // stops polling it (and says so in the page, so that the guest's next
  // doorbell traps). 0 disables polling: no device gets a doorbell page.
  std::chrono::nanoseconds spin = std::chrono::microseconds(200);
};

// What polling cost and found, since the poller was made.
struct DoorbellPollerStats {
  std::chrono::nanoseconds polling{0};  // Wall time with a page polled: the CPU spent.
  uint64_t rings = 0;                   // Tail changes noticed by polling.
  uint64_t sleeps = 0;                  // Pages that went quiet and stopped being polled.
};

// The words of one doorbell page the poller touches. Both live in memory the
// guest maps and may write anything to at any time.
struct DoorbellWords {
  uint32_t* tail;     // The guest's: the ring's new tail.
  uint32_t* polling;  // The device's: 1 while the tail is polled, else 0.
};

// Thread-safe: devices call Add/Activate/Deactivate on their transport's
// threads; the poller's own thread calls the ring callbacks, one at a time,
// with no lock held. Lock order: a device's locks before the poller's.
class DoorbellPoller {
 public:
  class Watch;

  explicit DoorbellPoller(DoorbellPollerOptions options);
  ~DoorbellPoller();  // Every Watch must be gone.
  DoorbellPoller(const DoorbellPoller&) = delete;
  DoorbellPoller& operator=(const DoorbellPoller&) = delete;

  // Watches |words|, cold (not polled) until Activate(). |on_ring| runs on
  // the poller's thread whenever it sees the tail word change.
  std::unique_ptr<Watch> Add(DoorbellWords words, std::function<void()> on_ring);

  const DoorbellPollerOptions& options() const { return options_; }
  DoorbellPollerStats Stats() const UMDEV_EXCLUDES(mu_);
  // Whether the polling thread runs (it starts with the first activity).
  bool started() const UMDEV_EXCLUDES(mu_);

 private:
  struct Entry {
    DoorbellWords words;
    std::function<void()> on_ring;
    uint32_t seen = 0;  // The tail last reported (a stale value costs one spurious ring).
    std::chrono::steady_clock::time_point deadline;
    bool hot = false;
    int firing = 0;  // Ring callbacks in progress.
  };

  void Activate(Entry* entry) UMDEV_EXCLUDES(mu_);
  void Deactivate(Entry* entry) UMDEV_REQUIRES(mu_);
  void Remove(Entry* entry) UMDEV_EXCLUDES(mu_);
  void Run() UMDEV_EXCLUDES(mu_);
  // One pass over the hot pages: collects those whose tail moved into
  // |fire|, lets those quiet past their deadline go cold.
  void Scan(std::vector<Entry*>& fire) UMDEV_REQUIRES(mu_);

  const DoorbellPollerOptions options_;
  mutable Mutex mu_;
  CondVar wake_;   // A page became hot, or the poller stops.
  CondVar fired_;  // A ring callback returned.
  std::vector<Entry*> hot_ UMDEV_GUARDED_BY(mu_);
  bool stop_ UMDEV_GUARDED_BY(mu_) = false;
  bool started_ UMDEV_GUARDED_BY(mu_) = false;
  DoorbellPollerStats stats_ UMDEV_GUARDED_BY(mu_);
  std::thread thread_;  // Started under mu_, joined by the destructor.
};

// One device's page. Destroying it waits for its ring callback in progress.
// Thread-safe.
class DoorbellPoller::Watch {
 public:
  ~Watch();
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  // Activity on the device (a trapped doorbell, a fence completed): poll the
  // page for the spin window from now, saying so in its polling word.
  void Activate();
  // The queue stopped (disabled, reset): stop polling, clear the word.
  void Deactivate();

 private:
  friend class DoorbellPoller;
  Watch(DoorbellPoller* poller, std::unique_ptr<Entry> entry)
      : poller_(poller), entry_(std::move(entry)) {}
  DoorbellPoller* poller_;
  std::unique_ptr<Entry> entry_;
};

}  // namespace umdev::vendor::gpu
