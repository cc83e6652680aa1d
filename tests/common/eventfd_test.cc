// Client eventfds: only eventfds are taken, and signalling one never blocks,
// whatever the client did to it.
#include "umdev/common/eventfd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>

#include "umdev/common/unique_fd.h"

namespace umdev {
namespace {

constexpr uint64_t kFull = 0xfffffffffffffffe;  // The largest eventfd counter.

uint64_t ReadCount(int fd) {
  uint64_t value = 0;
  EXPECT_EQ(::read(fd, &value, sizeof(value)), static_cast<ssize_t>(sizeof(value)));
  return value;
}

// Runs |work| and says whether it returned within 10 s (a hang fails, it does
// not time the code: the bound is 5 ms).
template <typename F>
bool Returns(F work) {
  auto done = std::async(std::launch::async, work);
  return done.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
}

TEST(EventFdTest, OnlyEventfdsAreEventfds) {
  UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  EXPECT_TRUE(IsEventFd(event.get()));
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  UniqueFd memfd(::memfd_create("x", MFD_CLOEXEC));
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  UniqueFd file(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  for (int fd : {read_end.get(), write_end.get(), memfd.get(), epoll.get(), socket.get(),
                 file.get(), -1, 99999}) {
    EXPECT_FALSE(IsEventFd(fd)) << fd;
    if (fd >= 0 && fd != 99999) {
      auto adopted = AdoptClientEventFd(fd, "test");
      ASSERT_FALSE(adopted.has_value());
      EXPECT_EQ(adopted.error().code, EINVAL);
    }
  }
}

TEST(EventFdTest, AdoptingMakesTheEventfdNonBlocking) {
  UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  ASSERT_TRUE(AdoptClientEventFd(event.get(), "test"));
  EXPECT_NE(::fcntl(event.get(), F_GETFL) & O_NONBLOCK, 0);
}

TEST(EventFdTest, SignalAddsOneAndDrainClears) {
  UniqueFd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  SignalEventFd(event.get());
  SignalEventFd(event.get());
  EXPECT_TRUE(DrainEventFd(event.get()));
  EXPECT_FALSE(DrainEventFd(event.get()));
  SignalEventFd(event.get());
  EXPECT_EQ(ReadCount(event.get()), 1u);
}

TEST(EventFdTest, AFullBlockingEventfdDoesNotBlockTheSignaller) {
  // The client left the counter at its maximum and the fd blocking.
  UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  const uint64_t full = kFull;
  ASSERT_EQ(::write(event.get(), &full, sizeof(full)), static_cast<ssize_t>(sizeof(full)));
  EXPECT_TRUE(Returns([&] {
    for (int i = 0; i < 3; ++i) SignalEventFd(event.get());
  }));
  EXPECT_EQ(ReadCount(event.get()), kFull);  // Still pending; nothing lost.
}

TEST(EventFdTest, AnEmptyBlockingEventfdDoesNotBlockTheDrainer) {
  UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  bool drained = true;
  EXPECT_TRUE(Returns([&] { drained = DrainEventFd(event.get()); }));
  EXPECT_FALSE(drained);
}

}  // namespace
}  // namespace umdev
