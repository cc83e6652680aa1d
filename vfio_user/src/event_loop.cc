// EventLoop: epoll_wait, handler dispatch and the task queue.
#include "event_loop.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

namespace umdev::vfio_user {
namespace {
constexpr uint64_t kWakeId = 0;
}  // namespace

Result<std::unique_ptr<EventLoop>> EventLoop::Create(std::string name) {
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) return FailErrno("epoll_create1");
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) return FailErrno("eventfd");
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = kWakeId;
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, wake.get(), &event) != 0) {
    return FailErrno("epoll_ctl wake");
  }
  return std::unique_ptr<EventLoop>(new EventLoop(std::move(name), std::move(epoll), std::move(wake)));
}

EventLoop::~EventLoop() { Stop(); }

void EventLoop::Start() {
  {
    MutexLock lock(mu_);
    running_ = true;
  }
  thread_ = std::thread([this] {
    ::pthread_setname_np(::pthread_self(), name_.substr(0, 15).c_str());
    Run();
  });
}

void EventLoop::Stop() {
  {
    MutexLock lock(mu_);
    if (!running_) return;
    stopping_ = true;
  }
  const uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
  thread_.join();
  MutexLock lock(mu_);
  running_ = false;
  exited_ = false;
  stopping_ = false;
}

Result<uint64_t> EventLoop::Watch(int fd, Handler handler) {
  const uint64_t id = next_id_++;
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) return FailErrno("epoll_ctl add");
  watches_[id] = {fd, std::make_shared<Handler>(std::move(handler))};
  return id;
}

void EventLoop::Unwatch(uint64_t id) {
  auto it = watches_.find(id);
  if (it == watches_.end()) return;
  (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.first, nullptr);
  watches_.erase(it);
}

void EventLoop::Post(std::function<void()> task) {
  {
    MutexLock lock(mu_);
    if (running_ && !exited_) {
      tasks_.push_back(std::move(task));
      task = nullptr;
    }
  }
  if (task) {  // No loop thread to run it: teardown runs it here.
    task();
    return;
  }
  const uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
}

void EventLoop::RunSync(const std::function<void()>& task) {
  bool inline_run = OnLoopThread();
  if (!inline_run) {
    MutexLock lock(mu_);
    inline_run = !running_ || exited_;
  }
  if (inline_run) {
    task();
    return;
  }
  bool finished = false;
  Post([&] {
    task();
    MutexLock lock(mu_);
    finished = true;
    done_.NotifyAll();
  });
  MutexLock lock(mu_);
  while (!finished) done_.Wait(mu_);
}

void EventLoop::RunTasks() {
  for (;;) {
    std::function<void()> task;
    {
      MutexLock lock(mu_);
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

void EventLoop::Run() {
  epoll_event events[32];
  auto last_event = std::chrono::steady_clock::now();
  for (;;) {
    // Within the busy-poll budget since the last event: look without
    // sleeping. Outside it (or with none): sleep until an event.
    const std::chrono::nanoseconds budget = busy_poll_ ? busy_poll_() : std::chrono::nanoseconds{0};
    const bool polling =
        budget.count() > 0 && std::chrono::steady_clock::now() - last_event < budget;
    const int n = ::epoll_wait(epoll_.get(), events, 32, polling ? 0 : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("vfio-user: {}: epoll_wait: {}", name_, ErrnoName(errno));
      break;
    }
    if (n == 0) continue;  // Polling, nothing yet.
    // The clock only where a budget is set: every client's loop has the
    // setting, most with 0.
    if (budget.count() > 0) last_event = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      // epoll_event is packed: copy the id out rather than bind a reference
      // to a misaligned field (UBSan in fuzz_vfio_user).
      const uint64_t id = events[i].data.u64;
      if (id == kWakeId) {
        uint64_t count;
        (void)!::read(wake_.get(), &count, sizeof(count));
        continue;
      }
      auto it = watches_.find(id);
      if (it == watches_.end()) continue;  // Unwatched earlier in this batch.
      auto handler = it->second.second;   // Survives an Unwatch from inside.
      (*handler)(events[i].events);
    }
    RunTasks();
    MutexLock lock(mu_);
    if (stopping_) break;
  }
  // Tasks posted from here on run on their poster's thread (see Post).
  for (;;) {
    RunTasks();
    MutexLock lock(mu_);
    if (tasks_.empty()) {
      exited_ = true;
      return;
    }
  }
}

}  // namespace umdev::vfio_user
