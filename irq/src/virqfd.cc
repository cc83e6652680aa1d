// VirqfdLoop: one epoll thread that reads fired eventfds and runs their callbacks.
#include "umdev/irq/virqfd.h"

#include "umdev/common/eventfd.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <vector>

#include <fmt/format.h>

#include "umdev/common/mutex.h"

namespace umdev::irq {
namespace internal {

namespace {

constexpr uint64_t kWakeId = 0;  // Registration ids start at 1.

struct Entry {
  UniqueFd fd;
  std::function<void()> on_fire;
};

// Clears an eventfd's counter without blocking; false if it was not signalled.
// The client may read the fd too, or make it blocking: DrainEventFd is bounded.
bool ReadCounter(int fd) { return DrainEventFd(fd); }

}  // namespace

// Shared by the loop and every handle, so handles may outlive the loop.
struct VirqfdCore {
  UniqueFd epoll;
  UniqueFd wake;  // An eventfd: Stop and Flush requests.

  Mutex mu;
  CondVar cv;  // running changed, a flush finished, or the loop stopped.
  std::map<uint64_t, std::shared_ptr<Entry>> entries UMDEV_GUARDED_BY(mu);
  uint64_t next_id UMDEV_GUARDED_BY(mu) = 1;
  uint64_t running UMDEV_GUARDED_BY(mu) = 0;  // Id whose callback runs now; 0 if none.
  std::thread::id loop_thread UMDEV_GUARDED_BY(mu);
  bool loop_running UMDEV_GUARDED_BY(mu) = false;
  bool stopping UMDEV_GUARDED_BY(mu) = false;
  uint64_t flush_requested UMDEV_GUARDED_BY(mu) = 0;
  uint64_t flush_done UMDEV_GUARDED_BY(mu) = 0;

  bool OnLoopThread() UMDEV_EXCLUDES(mu) {
    MutexLock lock(mu);
    return loop_thread == std::this_thread::get_id();
  }

  void Kick() {
    const uint64_t one = 1;
    // A full counter (never in practice) still leaves the fd readable.
    [[maybe_unused]] ssize_t n = ::write(wake.get(), &one, sizeof(one));
  }

  // Reads |id|'s counter and, if it had fired, runs its callback unlocked.
  void Fire(uint64_t id) UMDEV_EXCLUDES(mu) {
    std::shared_ptr<Entry> entry;
    {
      MutexLock lock(mu);
      auto it = entries.find(id);
      if (it == entries.end()) return;  // Disabled after epoll_wait returned.
      if (!ReadCounter(it->second->fd.get())) return;
      entry = it->second;  // Keeps the callback alive if it disables itself.
      running = id;
    }
    entry->on_fire();
    MutexLock lock(mu);
    running = 0;
    cv.NotifyAll();
  }

  // Runs the callback of every registration whose eventfd is signalled now.
  void Sweep() UMDEV_EXCLUDES(mu) {
    std::vector<uint64_t> ids;
    {
      MutexLock lock(mu);
      for (const auto& [id, entry] : entries) ids.push_back(id);
    }
    for (uint64_t id : ids) Fire(id);
  }

  void Run() UMDEV_EXCLUDES(mu) {
    epoll_event events[16];
    while (true) {
      const int n = ::epoll_wait(epoll.get(), events, 16, -1);
      if (n < 0) continue;  // EINTR; the fds are ours, nothing else can fail.
      for (int i = 0; i < n; ++i) {
        const uint64_t id = events[i].data.u64;
        if (id != kWakeId) {
          Fire(id);
          continue;
        }
        ReadCounter(wake.get());
        uint64_t ticket = 0;
        {
          MutexLock lock(mu);
          if (stopping) return;
          ticket = flush_requested;
        }
        Sweep();
        MutexLock lock(mu);
        if (ticket > flush_done) flush_done = ticket;
        cv.NotifyAll();
      }
    }
  }

  void Unregister(uint64_t id) UMDEV_EXCLUDES(mu) {
    std::shared_ptr<Entry> entry;
    {
      MutexLock lock(mu);
      auto it = entries.find(id);
      if (it == entries.end()) return;
      entry = std::move(it->second);
      entries.erase(it);
      // The caller may hold a dup of the eventfd, so closing ours is not enough.
      ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, entry->fd.get(), nullptr);
      if (loop_thread != std::this_thread::get_id()) {
        while (running == id) cv.Wait(mu);
      }
    }
    // |entry| (the fd and the callback) goes here, or with the running callback.
  }
};

}  // namespace internal

Virqfd::Virqfd(Virqfd&& other) noexcept
    : core_(std::move(other.core_)), id_(std::exchange(other.id_, 0)) {}

Virqfd& Virqfd::operator=(Virqfd&& other) noexcept {
  if (this != &other) {
    Disable();
    core_ = std::move(other.core_);
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

Virqfd::~Virqfd() { Disable(); }

void Virqfd::Disable() {
  if (core_ == nullptr) return;
  core_->Unregister(id_);
  core_.reset();
  id_ = 0;
}

Result<VirqfdLoop> VirqfdLoop::Create() {
  auto core = std::make_shared<internal::VirqfdCore>();
  core->epoll = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!core->epoll) return FailErrno("virqfd: epoll_create1");
  core->wake = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!core->wake) return FailErrno("virqfd: eventfd");
  epoll_event ev{.events = EPOLLIN, .data = {.u64 = internal::kWakeId}};
  if (::epoll_ctl(core->epoll.get(), EPOLL_CTL_ADD, core->wake.get(), &ev) != 0) {
    return FailErrno("virqfd: epoll_ctl add wake fd");
  }
  return VirqfdLoop(std::move(core));
}

VirqfdLoop::~VirqfdLoop() {
  if (core_ != nullptr) Stop();
}

Result<void> VirqfdLoop::Start() {
  MutexLock lock(core_->mu);
  if (core_->loop_running) return Fail(EBUSY, "virqfd: loop already running");
  core_->loop_running = true;
  core_->stopping = false;
  thread_ = std::thread([core = core_.get()] { core->Run(); });
  core_->loop_thread = thread_.get_id();
  return {};
}

void VirqfdLoop::Stop() {
  if (!thread_.joinable()) return;
  {
    MutexLock lock(core_->mu);
    core_->stopping = true;
  }
  core_->Kick();
  thread_.join();
  MutexLock lock(core_->mu);
  core_->loop_running = false;
  core_->stopping = false;
  core_->loop_thread = std::thread::id();
  core_->cv.NotifyAll();
}

Result<Virqfd> VirqfdLoop::Watch(UniqueFd eventfd, std::function<void()> on_fire) {
  if (!eventfd.valid()) return Fail(EINVAL, "virqfd: invalid eventfd");
  if (!on_fire) return Fail(EINVAL, "virqfd: empty callback");
  MutexLock lock(core_->mu);
  const uint64_t id = core_->next_id++;
  epoll_event ev{.events = EPOLLIN, .data = {.u64 = id}};
  if (::epoll_ctl(core_->epoll.get(), EPOLL_CTL_ADD, eventfd.get(), &ev) != 0) {
    return FailErrno(fmt::format("virqfd: epoll_ctl add fd {}", eventfd.get()));
  }
  core_->entries.emplace(id, std::make_shared<internal::Entry>(
                                 internal::Entry{std::move(eventfd), std::move(on_fire)}));
  return Virqfd(core_, id);
}

void VirqfdLoop::Flush() {
  if (core_->OnLoopThread()) {
    core_->Sweep();
    return;
  }
  uint64_t ticket = 0;
  {
    MutexLock lock(core_->mu);
    if (!core_->loop_running) return;
    ticket = ++core_->flush_requested;
  }
  core_->Kick();
  MutexLock lock(core_->mu);
  while (core_->flush_done < ticket && core_->loop_running) core_->cv.Wait(core_->mu);
}

}  // namespace umdev::irq
