// VirqfdLoop and Virqfd: firing, flushing, and teardown against running callbacks.
#include "umdev/irq/virqfd.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

namespace umdev::irq {
namespace {

UniqueFd MakeEventfd() { return UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)); }

void Signal(int fd) {
  const uint64_t one = 1;
  ASSERT_EQ(::write(fd, &one, sizeof(one)), 8);
}

VirqfdLoop StartedLoop() {
  auto loop = VirqfdLoop::Create();
  EXPECT_TRUE(loop.has_value());
  EXPECT_TRUE(loop->Start().has_value());
  return std::move(*loop);
}

TEST(VirqfdTest, FireReadsCounterAndRunsCallback) {
  VirqfdLoop loop = StartedLoop();
  UniqueFd fd = MakeEventfd();
  const int raw = fd.get();
  std::atomic<int> fired{0};
  auto v = loop.Watch(std::move(fd), [&] { ++fired; });
  ASSERT_TRUE(v.has_value());
  Signal(raw);
  Signal(raw);
  loop.Flush();
  EXPECT_GE(fired.load(), 1);
  uint64_t value = 0;
  EXPECT_EQ(::read(raw, &value, sizeof(value)), -1);  // Cleared by the loop.
  EXPECT_EQ(errno, EAGAIN);
  const int before = fired.load();
  Signal(raw);
  loop.Flush();
  EXPECT_EQ(fired.load(), before + 1);
}

TEST(VirqfdTest, WatchErrors) {
  VirqfdLoop loop = StartedLoop();
  auto bad = loop.Watch(UniqueFd(), [] {});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, EINVAL);
  auto empty = loop.Watch(MakeEventfd(), nullptr);
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code, EINVAL);
  // A regular file cannot be polled.
  auto file = loop.Watch(UniqueFd(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC)), [] {});
  ASSERT_FALSE(file.has_value());
  EXPECT_EQ(file.error().code, EPERM);
  EXPECT_EQ(loop.Start().error().code, EBUSY);
}

TEST(VirqfdTest, FlushWaitsForEverySignalledCallback) {
  VirqfdLoop loop = StartedLoop();
  constexpr int kFds = 8;
  std::atomic<int> fired{0};
  std::vector<Virqfd> handles;
  std::vector<int> raws;
  for (int i = 0; i < kFds; ++i) {
    UniqueFd fd = MakeEventfd();
    raws.push_back(fd.get());
    auto v = loop.Watch(std::move(fd), [&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      ++fired;
    });
    ASSERT_TRUE(v.has_value());
    handles.push_back(std::move(*v));
  }
  for (int raw : raws) Signal(raw);
  loop.Flush();
  EXPECT_EQ(fired.load(), kFds);
}

TEST(VirqfdTest, DisableFromOwnCallbackDoesNotDeadlock) {
  VirqfdLoop loop = StartedLoop();
  UniqueFd fd = MakeEventfd();
  const int dup = ::dup(fd.get());
  Virqfd handle;
  std::atomic<int> fired{0};
  auto v = loop.Watch(std::move(fd), [&] {
    ++fired;
    handle.Disable();
  });
  ASSERT_TRUE(v.has_value());
  handle = std::move(*v);
  loop.Flush();  // Publishes |handle| to the loop thread (through its mutex).
  Signal(dup);
  loop.Flush();
  EXPECT_EQ(fired.load(), 1);
  Signal(dup);  // Unregistered: the dup keeps the eventfd alive but nothing runs.
  loop.Flush();
  EXPECT_EQ(fired.load(), 1);
  ::close(dup);
}

TEST(VirqfdTest, DestroyWaitsForRunningCallback) {
  VirqfdLoop loop = StartedLoop();
  UniqueFd fd = MakeEventfd();
  const int raw = fd.get();
  std::atomic<bool> entered{false};
  std::atomic<bool> finished{false};
  auto v = loop.Watch(std::move(fd), [&] {
    entered = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    finished = true;
  });
  ASSERT_TRUE(v.has_value());
  Signal(raw);
  while (!entered) std::this_thread::yield();
  v->Disable();
  EXPECT_TRUE(finished.load());
}

TEST(VirqfdTest, HandleOutlivesLoopAndFlushWithoutLoopReturns) {
  Virqfd handle;
  {
    auto loop = VirqfdLoop::Create();
    ASSERT_TRUE(loop.has_value());
    loop->Flush();  // Not started.
    auto v = loop->Watch(MakeEventfd(), [] {});
    ASSERT_TRUE(v.has_value());
    handle = std::move(*v);
    ASSERT_TRUE(loop->Start().has_value());
  }
  EXPECT_TRUE(handle.active());
  handle.Disable();
  EXPECT_FALSE(handle.active());
}

TEST(VirqfdTest, ConcurrentWatchSignalDisable) {
  VirqfdLoop loop = StartedLoop();
  std::atomic<int> fired{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        UniqueFd fd = MakeEventfd();
        const int raw = fd.get();
        auto v = loop.Watch(std::move(fd), [&] { ++fired; });
        ASSERT_TRUE(v.has_value());
        Signal(raw);
        if (i % 2 == 0) loop.Flush();
        v->Disable();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GE(fired.load(), 400);
}

}  // namespace
}  // namespace umdev::irq
