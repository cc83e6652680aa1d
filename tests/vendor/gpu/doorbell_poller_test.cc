// DoorbellPoller: pages are polled only after activity and only for the
// spin window, a doorbell rung while the page goes cold is never lost, and
// a watch goes away only once its callback has returned.
#include "umdev/vendor/gpu/doorbell_poller.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <random>
#include <thread>

namespace umdev::vendor::gpu {
namespace {

using namespace std::chrono_literals;

// One device's doorbell words, as the guest sees them.
struct Page {
  alignas(64) uint32_t tail = 0;
  alignas(64) uint32_t polling = 7;  // Garbage: Add() clears it.

  DoorbellWords words() { return {.tail = &tail, .polling = &polling}; }
  uint32_t Polling() { return std::atomic_ref<uint32_t>(polling).load(); }
  // The guest's side of the protocol: store the tail, then see whether
  // anybody polls; false when it must ring the trapped doorbell.
  bool Ring(uint32_t value) {
    std::atomic_ref<uint32_t>(tail).store(value, std::memory_order_seq_cst);
    return std::atomic_ref<uint32_t>(polling).load(std::memory_order_seq_cst) != 0;
  }
};

template <typename Predicate>
bool WaitUntil(Predicate done, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(100us);
  }
  return true;
}

TEST(DoorbellPollerTest, AColdPageIsNotPolledAndNoThreadRuns) {
  DoorbellPoller poller({.spin = 10s});
  Page page;
  std::atomic<int> rings{0};
  auto watch = poller.Add(page.words(), [&] { ++rings; });
  EXPECT_EQ(page.Polling(), 0u);
  EXPECT_FALSE(page.Ring(5)) << "cold: the guest must trap";
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(rings.load(), 0);
  EXPECT_FALSE(poller.started());
  EXPECT_EQ(poller.Stats().polling.count(), 0);
}

TEST(DoorbellPollerTest, AnActivePageRingsOncePerTailChange) {
  DoorbellPoller poller({.spin = 10s});
  Page page;
  std::atomic<uint32_t> seen{0};
  std::atomic<int> rings{0};
  auto watch = poller.Add(page.words(), [&] {
    seen = std::atomic_ref<uint32_t>(page.tail).load();
    ++rings;
  });
  watch->Activate();
  EXPECT_EQ(page.Polling(), 1u);
  EXPECT_TRUE(poller.started());
  for (uint32_t tail = 1; tail <= 5; ++tail) {
    EXPECT_TRUE(page.Ring(tail)) << "hot: no trap needed";
    ASSERT_TRUE(WaitUntil([&] { return seen.load() == tail; })) << tail;
  }
  std::this_thread::sleep_for(5ms);
  EXPECT_EQ(rings.load(), 5);
  EXPECT_EQ(poller.Stats().rings, 5u);
  watch->Deactivate();
  EXPECT_EQ(page.Polling(), 0u);
  page.Ring(6);
  std::this_thread::sleep_for(5ms);
  EXPECT_EQ(rings.load(), 5);
}

TEST(DoorbellPollerTest, AQuietPageGoesColdAndCostsNothingIdle) {
  DoorbellPoller poller({.spin = 2ms});
  Page page;
  std::atomic<int> rings{0};
  auto watch = poller.Add(page.words(), [&] { ++rings; });
  watch->Activate();
  ASSERT_TRUE(WaitUntil([&] { return page.Polling() == 0; }));
  ASSERT_TRUE(WaitUntil([&] { return poller.Stats().sleeps == 1; }));
  const auto polled = poller.Stats().polling;
  EXPECT_GT(polled.count(), 0);
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(poller.Stats().polling, polled) << "no polling while every page is cold";
  EXPECT_FALSE(page.Ring(9));
  std::this_thread::sleep_for(5ms);
  EXPECT_EQ(rings.load(), 0);
}

// The guest's protocol against a poller that keeps going cold: every tail
// the guest stores reaches the callback, through polling or the "trap".
TEST(DoorbellPollerTest, NoDoorbellIsLostWhilePagesGoCold) {
  DoorbellPoller poller({.spin = 20us});
  Page pages[3];
  std::atomic<uint32_t> seen[3] = {0, 0, 0};
  std::vector<std::unique_ptr<DoorbellPoller::Watch>> watches;
  for (int i = 0; i < 3; ++i) {
    watches.push_back(poller.Add(pages[i].words(), [&, i] {
      seen[i] = std::atomic_ref<uint32_t>(pages[i].tail).load();
    }));
  }
  std::atomic<int> traps{0};
  std::vector<std::thread> guests;
  for (int i = 0; i < 3; ++i) {
    guests.emplace_back([&, i] {
      std::mt19937 random(static_cast<uint32_t>(i));
      for (uint32_t tail = 1; tail <= 300; ++tail) {
        if (!pages[i].Ring(tail)) {
          // The trapped doorbell: the device reads the tail itself and
          // has the page polled again.
          seen[i] = std::atomic_ref<uint32_t>(pages[i].tail).load();
          watches[i]->Activate();
          ++traps;
        }
        ASSERT_TRUE(WaitUntil([&] { return seen[i].load() == tail; }, 5s))
            << "page " << i << " lost tail " << tail;
        std::this_thread::sleep_for(std::chrono::microseconds(random() % 60));
      }
    });
  }
  for (auto& guest : guests) guest.join();
  EXPECT_GT(traps.load(), 0) << "the pages never went cold: the test proves nothing";
  EXPECT_GT(poller.Stats().rings, 0u) << "nothing was noticed by polling";
}

TEST(DoorbellPollerTest, DestroyingAWatchWaitsForItsCallback) {
  DoorbellPoller poller({.spin = 10s});
  Page page;
  std::promise<void> entered, release;
  auto release_future = release.get_future();
  auto watch = poller.Add(page.words(), [&] {
    entered.set_value();
    release_future.wait();
  });
  watch->Activate();
  page.Ring(1);
  entered.get_future().wait();
  std::atomic<bool> destroyed{false};
  std::thread destroyer([&] {
    watch.reset();
    destroyed = true;
  });
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(destroyed.load()) << "the watch went while its callback ran";
  release.set_value();
  destroyer.join();
  EXPECT_TRUE(destroyed.load());
  EXPECT_EQ(page.Polling(), 0u);
}

}  // namespace
}  // namespace umdev::vendor::gpu
