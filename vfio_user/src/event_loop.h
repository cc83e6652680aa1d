// EventLoop: one epoll thread; the server runs a small fixed pool of them and
// spreads device sockets and client connections across it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <thread>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/common/unique_fd.h"

namespace umdev::vfio_user {

// Watches fds and runs their handlers, and runs posted tasks, all on its one
// thread, so state touched only by handlers and tasks needs no lock.
// Watch/Unwatch: loop thread only (use RunSync from elsewhere). Post, RunSync,
// Stop: any thread.
class EventLoop {
 public:
  using Handler = std::function<void(uint32_t events)>;

  static Result<std::unique_ptr<EventLoop>> Create(std::string name);
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  void Start();
  // Runs the tasks already posted, then joins the thread. Idempotent.
  void Stop() UMDEV_EXCLUDES(mu_);

  // Level-triggered EPOLLIN (plus ERR/HUP). Returns an id for Unwatch.
  Result<uint64_t> Watch(int fd, Handler handler);
  // Safe from inside any handler, including the fd's own; a pending event of
  // this batch for the fd is then dropped.
  void Unwatch(uint64_t id);

  void Post(std::function<void()> task) UMDEV_EXCLUDES(mu_);
  // Runs |task| on the loop thread and waits for it; inline when already on
  // it, or when the loop is not running.
  void RunSync(const std::function<void()>& task) UMDEV_EXCLUDES(mu_);
  bool OnLoopThread() const { return std::this_thread::get_id() == thread_.get_id(); }

  // Busy polling: after an event, the loop polls its fds without sleeping
  // for as long as |budget| says (read each time it would sleep), then
  // sleeps in epoll_wait as usual. Trades the CPU of this thread for the
  // wake-up latency of the next message. Null or zero: always sleep. Loop
  // thread (or before Start).
  void SetBusyPoll(std::function<std::chrono::nanoseconds()> budget) {
    busy_poll_ = std::move(budget);
  }

 private:
  EventLoop(std::string name, UniqueFd epoll, UniqueFd wake)
      : name_(std::move(name)), epoll_(std::move(epoll)), wake_(std::move(wake)) {}
  void Run();
  void RunTasks() UMDEV_EXCLUDES(mu_);

  const std::string name_;
  UniqueFd epoll_;
  UniqueFd wake_;
  std::thread thread_;
  // Loop thread only.
  std::map<uint64_t, std::pair<int, std::shared_ptr<Handler>>> watches_;
  uint64_t next_id_ = 1;
  std::function<std::chrono::nanoseconds()> busy_poll_;

  Mutex mu_;
  CondVar done_;
  std::deque<std::function<void()>> tasks_ UMDEV_GUARDED_BY(mu_);
  bool stopping_ UMDEV_GUARDED_BY(mu_) = false;
  bool running_ UMDEV_GUARDED_BY(mu_) = false;
  bool exited_ UMDEV_GUARDED_BY(mu_) = false;  // Run() returned; tasks run inline.
};

}  // namespace umdev::vfio_user
