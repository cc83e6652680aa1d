// The per-parent scheduler: round robin over queues with work, turns bounded
// by the time slice, and for the share policies a token bucket per queue
// refilled at the queue's share of wall-clock time (docs/gpu-scheduler.md).
#include "umdev/vendor/gpu/scheduler.h"

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace umdev::vendor::gpu {

using std::chrono::nanoseconds;

Result<SchedulingPolicy> ParseSchedulingPolicy(std::string_view name) {
  std::string normalized(name);
  std::replace(normalized.begin(), normalized.end(), '-', '_');
  if (normalized == "best_effort") return SchedulingPolicy::kBestEffort;
  if (normalized == "equal_share") return SchedulingPolicy::kEqualShare;
  if (normalized == "fixed_share") return SchedulingPolicy::kFixedShare;
  return Fail(EINVAL, fmt::format("unknown scheduling policy '{}' (best_effort, equal_share, "
                                  "fixed_share)",
                                  name));
}

std::string_view FormatSchedulingPolicy(SchedulingPolicy policy) {
  switch (policy) {
    case SchedulingPolicy::kBestEffort:
      return "best_effort";
    case SchedulingPolicy::kEqualShare:
      return "equal_share";
    case SchedulingPolicy::kFixedShare:
      return "fixed_share";
  }
  return "unknown";
}

namespace {

class SteadyClock final : public SchedulerClock {
 public:
  nanoseconds Now() override {
    return std::chrono::duration_cast<nanoseconds>(
        std::chrono::steady_clock::now().time_since_epoch());
  }
  void WaitUntil(Mutex& mu, CondVar& cv, nanoseconds deadline) override UMDEV_REQUIRES(mu) {
    const nanoseconds left = deadline - Now();
    if (left > nanoseconds::zero()) cv.WaitFor(mu, left);
  }
};

// Longer idle gaps than this refill every bucket to its cap anyway; the clamp
// keeps elapsed * share_permille far from overflowing.
constexpr nanoseconds kMaxRefillGap = std::chrono::hours(1);

}  // namespace

std::shared_ptr<SchedulerClock> SteadySchedulerClock() {
  static const auto clock = std::make_shared<SteadyClock>();
  return clock;
}

namespace scheduler_internal {

// One attached queue. Every mutable field is guarded by the owning Core's mu.
struct Entry {
  CommandQueue* const queue;
  const uint32_t share_permille;

  bool pending = false;   // kicked and not yet seen idle
  uint64_t kicks = 0;     // tells a Kick that raced with an idle RunOne()
  bool running = false;   // the worker is inside queue->RunOne()
  bool detached = false;
  bool throttled = false;  // passed over for lack of tokens since it last ran
  // Share policies: device time the queue may still use; negative after an
  // overrun, which it pays back before running again.
  int64_t tokens_ns = 0;
  QueueStats stats;

  Entry(CommandQueue* q, uint32_t share) : queue(q), share_permille(share) {}
};

// The scheduler's state, shared with its handles so they may outlive it.
// Thread-safe; the worker thread runs WorkerLoop().
struct Core {
  explicit Core(SchedulerOptions o) : options(std::move(o)), time_slice(options.time_slice) {}

  void WorkerLoop() UMDEV_EXCLUDES(mu);
  void Kick(Entry& entry) UMDEV_EXCLUDES(mu);
  void Detach(Entry& entry) UMDEV_EXCLUDES(mu);

  bool shares_enforced() const {
    return options.policy != SchedulingPolicy::kBestEffort;
  }
  void Refill(nanoseconds now) UMDEV_REQUIRES(mu);
  void Accrue(Entry& entry, nanoseconds elapsed) UMDEV_REQUIRES(mu);
  std::shared_ptr<Entry> PickNext() UMDEV_REQUIRES(mu);
  std::optional<nanoseconds> ThrottleDeadline() UMDEV_REQUIRES(mu);
  void RunTurn(const std::shared_ptr<Entry>& entry) UMDEV_REQUIRES(mu);
  void Remove(Entry& entry) UMDEV_REQUIRES(mu);

  const SchedulerOptions options;
  const nanoseconds time_slice;

  Mutex mu;
  CondVar work_cv;  // the worker waits here for kicks, detaches and stop
  CondVar idle_cv;  // Detach() waits here for the running command
  // Round-robin order: attach order; |cursor| is where the next search starts.
  std::vector<std::shared_ptr<Entry>> entries UMDEV_GUARDED_BY(mu);
  size_t cursor UMDEV_GUARDED_BY(mu) = 0;
  uint32_t fixed_share_total UMDEV_GUARDED_BY(mu) = 0;
  nanoseconds last_refill UMDEV_GUARDED_BY(mu){0};
  // The longest command seen: bounds a round, hence a waiting queue's bucket.
  nanoseconds longest_command UMDEV_GUARDED_BY(mu){0};
  bool stop UMDEV_GUARDED_BY(mu) = false;
  std::thread::id worker_id UMDEV_GUARDED_BY(mu);
};

void Core::Accrue(Entry& entry, nanoseconds elapsed) {
  const int64_t n = static_cast<int64_t>(entries.size());
  const int64_t gap = std::min(elapsed, kMaxRefillGap).count();
  const int64_t gained = options.policy == SchedulingPolicy::kEqualShare
                             ? gap / n
                             : gap * entry.share_permille / 1000;
  // An idle queue banks at most one slice (its burst); a queue waiting with
  // work banks at most one round, N turns of a slice plus a command, which is
  // all it can be owed by the time its turn comes.
  const int64_t cap = entry.pending ? n * (time_slice + longest_command).count()
                                    : time_slice.count();
  if (entry.tokens_ns < cap) {
    entry.tokens_ns = std::min(entry.tokens_ns + gained, cap);
  } else if (!entry.pending) {
    entry.tokens_ns = cap;  // gone idle with a surplus: it keeps only the burst
  }
}

void Core::Refill(nanoseconds now) {
  const nanoseconds elapsed = now - last_refill;
  last_refill = now;
  if (!shares_enforced() || elapsed <= nanoseconds::zero()) return;
  for (const auto& entry : entries) Accrue(*entry, elapsed);
}

std::shared_ptr<Entry> Core::PickNext() {
  const size_t n = entries.size();
  for (size_t i = 0; i < n; ++i) {
    const std::shared_ptr<Entry>& entry = entries[(cursor + i) % n];
    if (!entry->pending) continue;
    if (shares_enforced() && entry->tokens_ns <= 0) {
      if (!entry->throttled) {
        entry->throttled = true;
        ++entry->stats.throttled;
      }
      continue;
    }
    return entry;
  }
  return nullptr;
}

// When the first queue that has work but no tokens earns a positive balance.
std::optional<nanoseconds> Core::ThrottleDeadline() {
  std::optional<nanoseconds> earliest;
  if (!shares_enforced()) return earliest;
  const int64_t n = static_cast<int64_t>(entries.size());
  for (const auto& entry : entries) {
    if (!entry->pending || entry->tokens_ns > 0) continue;
    const int64_t owed = 1 - entry->tokens_ns;
    const int64_t wait = options.policy == SchedulingPolicy::kEqualShare
                             ? owed * n
                             : (owed * 1000 + entry->share_permille - 1) / entry->share_permille;
    const nanoseconds deadline = last_refill + nanoseconds(wait);
    if (!earliest || deadline < *earliest) earliest = deadline;
  }
  return earliest;
}

void Core::RunTurn(const std::shared_ptr<Entry>& entry) {
  entry->running = true;
  entry->throttled = false;
  nanoseconds turn{0};
  for (;;) {
    const uint64_t kicks = entry->kicks;
    mu.Unlock();
    const std::optional<CommandCost> cost = entry->queue->RunOne();
    mu.Lock();
    if (!cost) {
      // A Kick during that RunOne() may have queued work it did not see.
      if (entry->kicks == kicks) entry->pending = false;
      ++entry->stats.yielded;
      break;
    }
    const nanoseconds busy = std::max(cost->busy, nanoseconds::zero());
    QueueStats& stats = entry->stats;
    stats.busy += busy;
    stats.bytes += cost->bytes;
    if (cost->failed) {
      ++stats.errors;
    } else if (!cost->partial) {
      ++stats.commands;
    }
    longest_command = std::max(longest_command, busy);
    turn += busy;
    if (shares_enforced()) {
      Refill(options.clock->Now());
      entry->tokens_ns -= busy.count();
    }
    if (stop || entry->detached) break;
    if (turn >= time_slice || (shares_enforced() && entry->tokens_ns <= 0)) {
      ++stats.preempted;
      break;
    }
  }
  entry->running = false;
  const auto it = std::find(entries.begin(), entries.end(), entry);
  if (it != entries.end()) cursor = static_cast<size_t>(it - entries.begin()) + 1;
  if (!entries.empty()) cursor %= entries.size();
  idle_cv.NotifyAll();
}

void Core::WorkerLoop() {
  MutexLock lock(mu);
  worker_id = std::this_thread::get_id();
  while (!stop) {
    Refill(options.clock->Now());
    if (const std::shared_ptr<Entry> entry = PickNext()) {
      RunTurn(entry);
      continue;
    }
    if (const auto deadline = ThrottleDeadline()) {
      options.clock->WaitUntil(mu, work_cv, *deadline);
    } else {
      work_cv.Wait(mu);
    }
  }
}

void Core::Kick(Entry& entry) {
  MutexLock lock(mu);
  if (entry.detached) return;
  entry.pending = true;
  ++entry.kicks;
  work_cv.NotifyAll();
}

void Core::Remove(Entry& entry) {
  const auto it = std::find_if(entries.begin(), entries.end(),
                               [&](const auto& e) { return e.get() == &entry; });
  if (it == entries.end()) return;
  const size_t index = static_cast<size_t>(it - entries.begin());
  entries.erase(it);
  if (index < cursor) --cursor;
  if (cursor >= entries.size()) cursor = 0;
  if (options.policy == SchedulingPolicy::kFixedShare) fixed_share_total -= entry.share_permille;
}

void Core::Detach(Entry& entry) {
  MutexLock lock(mu);
  if (!entry.detached) {
    // Settle the buckets under the old N before equal shares grow.
    Refill(options.clock->Now());
    entry.detached = true;
    entry.pending = false;
    Remove(entry);
    work_cv.NotifyAll();
  }
  // From inside a RunOne() (the worker thread) there is nothing to wait
  // for: the turn ends when that RunOne() returns.
  if (std::this_thread::get_id() == worker_id) return;
  while (entry.running) idle_cv.Wait(mu);
}

}  // namespace scheduler_internal

using scheduler_internal::Core;
using scheduler_internal::Entry;

Scheduler::Handle::Handle() = default;

Scheduler::Handle::Handle(std::shared_ptr<Core> core, std::shared_ptr<Entry> entry)
    : core_(std::move(core)), entry_(std::move(entry)) {}

Scheduler::Handle::~Handle() { Detach(); }

Scheduler::Handle::Handle(Handle&& other) noexcept
    : core_(std::move(other.core_)), entry_(std::move(other.entry_)) {}

Scheduler::Handle& Scheduler::Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    Detach();
    core_ = std::move(other.core_);
    entry_ = std::move(other.entry_);
  }
  return *this;
}

void Scheduler::Handle::Kick() {
  if (core_) core_->Kick(*entry_);
}

QueueStats Scheduler::Handle::Stats() const {
  if (!core_) return {};
  MutexLock lock(core_->mu);
  return entry_->stats;
}

void Scheduler::Handle::Detach() {
  if (!core_) return;
  core_->Detach(*entry_);
}

bool Scheduler::Handle::attached() const {
  if (!core_) return false;
  MutexLock lock(core_->mu);
  return !entry_->detached;
}

Result<std::unique_ptr<Scheduler>> Scheduler::Create(SchedulerOptions options) {
  if (options.time_slice <= std::chrono::microseconds::zero()) {
    return Fail(EINVAL, fmt::format("scheduler time slice {} us: must be positive",
                                    options.time_slice.count()));
  }
  if (!options.clock) options.clock = SteadySchedulerClock();
  auto core = std::make_shared<Core>(std::move(options));
  {
    MutexLock lock(core->mu);
    core->last_refill = core->options.clock->Now();
  }
  return std::unique_ptr<Scheduler>(new Scheduler(std::move(core)));
}

Scheduler::Scheduler(std::shared_ptr<Core> core) : core_(std::move(core)) {
  worker_ = std::thread([core = core_.get()] { core->WorkerLoop(); });
  pthread_setname_np(worker_.native_handle(), "umdev-gpu-sched");
}

Scheduler::~Scheduler() {
  {
    MutexLock lock(core_->mu);
    core_->stop = true;
    core_->work_cv.NotifyAll();
  }
  worker_.join();
}

Result<Scheduler::Handle> Scheduler::Attach(CommandQueue* queue, uint32_t share_permille) {
  if (queue == nullptr) return Fail(EINVAL, "scheduler attach: no queue");
  if (share_permille == 0 || share_permille > 1000) {
    return Fail(EINVAL, fmt::format("scheduler attach: share {} per mille outside 1..1000",
                                    share_permille));
  }
  MutexLock lock(core_->mu);
  if (core_->options.policy == SchedulingPolicy::kFixedShare &&
      core_->fixed_share_total + share_permille > 1000) {
    return Fail(ENOSPC, fmt::format("scheduler attach: fixed shares would sum to {} per mille",
                                    core_->fixed_share_total + share_permille));
  }
  // Settle the buckets under the old N before equal shares shrink.
  core_->Refill(core_->options.clock->Now());
  auto entry = std::make_shared<Entry>(queue, share_permille);
  core_->entries.push_back(entry);
  if (core_->options.policy == SchedulingPolicy::kFixedShare) {
    core_->fixed_share_total += share_permille;
  }
  return Handle(core_, std::move(entry));
}

SchedulingPolicy Scheduler::policy() const { return core_->options.policy; }

std::chrono::microseconds Scheduler::time_slice() const { return core_->options.time_slice; }

size_t Scheduler::attached_count() const {
  MutexLock lock(core_->mu);
  return core_->entries.size();
}

}  // namespace umdev::vendor::gpu
