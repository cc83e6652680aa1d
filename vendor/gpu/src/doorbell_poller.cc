// DoorbellPoller: the polling thread and the hot/cold life of each page.
//
// The guest rings by storing the tail, a full barrier, then reading the
// polling word: 0 means nobody polls, so it also writes the trapped
// DOORBELL. Going cold, the poller stores 0 in the polling word, then reads
// the tail once more (both sequentially consistent): either that read sees
// the guest's store, or the guest's read sees the 0. No doorbell is lost.
#include "umdev/vendor/gpu/doorbell_poller.h"

#include <algorithm>
#include <atomic>

#include <spdlog/spdlog.h>

namespace umdev::vendor::gpu {
namespace {

uint32_t LoadWord(uint32_t* word, std::memory_order order) {
  return std::atomic_ref<uint32_t>(*word).load(order);
}

void StoreWord(uint32_t* word, uint32_t value) {
  std::atomic_ref<uint32_t>(*word).store(value, std::memory_order_seq_cst);
}

// A few cycles between passes, so the core's sibling thread and the bus get
// room while a page is polled.
void Relax() {
#if defined(__x86_64__) || defined(__i386__)
  for (int i = 0; i < 8; ++i) __builtin_ia32_pause();
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

}  // namespace

DoorbellPoller::DoorbellPoller(DoorbellPollerOptions options) : options_(options) {}

DoorbellPoller::~DoorbellPoller() {
  {
    MutexLock lock(mu_);
    stop_ = true;
    wake_.NotifyAll();
  }
  if (thread_.joinable()) thread_.join();
}

std::unique_ptr<DoorbellPoller::Watch> DoorbellPoller::Add(DoorbellWords words,
                                                           std::function<void()> on_ring) {
  auto entry = std::make_unique<Entry>();
  entry->words = words;
  entry->on_ring = std::move(on_ring);
  StoreWord(words.polling, 0);
  return std::unique_ptr<Watch>(new Watch(this, std::move(entry)));
}

DoorbellPollerStats DoorbellPoller::Stats() const {
  MutexLock lock(mu_);
  return stats_;
}

bool DoorbellPoller::started() const {
  MutexLock lock(mu_);
  return started_;
}

void DoorbellPoller::Activate(Entry* entry) {
  MutexLock lock(mu_);
  entry->deadline = std::chrono::steady_clock::now() + options_.spin;
  if (entry->hot || stop_) return;
  entry->hot = true;
  StoreWord(entry->words.polling, 1);
  hot_.push_back(entry);
  if (!started_) {
    started_ = true;
    thread_ = std::thread([this] { Run(); });
  }
  wake_.NotifyAll();
}

void DoorbellPoller::Deactivate(Entry* entry) {
  StoreWord(entry->words.polling, 0);
  if (!entry->hot) return;
  entry->hot = false;
  hot_.erase(std::find(hot_.begin(), hot_.end(), entry));
}

void DoorbellPoller::Remove(Entry* entry) {
  MutexLock lock(mu_);
  Deactivate(entry);
  while (entry->firing > 0) fired_.Wait(mu_);
}

void DoorbellPoller::Scan(std::vector<Entry*>& fire) {
  const auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < hot_.size();) {
    Entry* entry = hot_[i];
    uint32_t tail = LoadWord(entry->words.tail, std::memory_order_acquire);
    if (tail == entry->seen && now >= entry->deadline) {
      StoreWord(entry->words.polling, 0);
      tail = LoadWord(entry->words.tail, std::memory_order_seq_cst);
      if (tail == entry->seen) {
        entry->hot = false;
        hot_[i] = hot_.back();
        hot_.pop_back();
        ++stats_.sleeps;
        continue;
      }
      StoreWord(entry->words.polling, 1);  // Rung as it went quiet: stay hot.
    }
    if (tail != entry->seen) {
      entry->seen = tail;
      entry->deadline = now + options_.spin;
      ++entry->firing;
      ++stats_.rings;
      fire.push_back(entry);
    }
    ++i;
  }
}

void DoorbellPoller::Run() {
  std::vector<Entry*> fire;
  fire.reserve(64);
  mu_.Lock();
  while (!stop_) {
    if (hot_.empty()) {
      wake_.Wait(mu_);
      continue;
    }
    // Polling from here until no page is hot: its wall time is its CPU.
    const auto start = std::chrono::steady_clock::now();
    while (!stop_ && !hot_.empty()) {
      fire.clear();
      Scan(fire);
      mu_.Unlock();
      for (Entry* entry : fire) entry->on_ring();
      if (fire.empty()) Relax();
      mu_.Lock();
      for (Entry* entry : fire) --entry->firing;
      if (!fire.empty()) fired_.NotifyAll();
    }
    stats_.polling += std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::steady_clock::now() - start);
  }
  mu_.Unlock();
}

DoorbellPoller::Watch::~Watch() { poller_->Remove(entry_.get()); }

void DoorbellPoller::Watch::Activate() { poller_->Activate(entry_.get()); }

void DoorbellPoller::Watch::Deactivate() {
  MutexLock lock(poller_->mu_);
  poller_->Deactivate(entry_.get());
}

}  // namespace umdev::vendor::gpu
