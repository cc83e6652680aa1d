// VirqfdLoop and Virqfd: run a callback on one epoll thread when an eventfd fires.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"

namespace umdev::irq {

class VirqfdLoop;

namespace internal {
struct VirqfdCore;
}  // namespace internal

// One registration on a VirqfdLoop, the userspace twin of the kernel's
// struct virqfd. Move-only. Destroying it (or Disable()) unregisters the
// eventfd and closes it; it does not return while the callback runs on the
// loop thread, except when called from that callback itself. Thread-safe.
class Virqfd {
 public:
  Virqfd() = default;
  Virqfd(Virqfd&& other) noexcept;
  Virqfd& operator=(Virqfd&& other) noexcept;
  Virqfd(const Virqfd&) = delete;
  Virqfd& operator=(const Virqfd&) = delete;
  ~Virqfd();

  bool active() const { return core_ != nullptr; }
  // Idempotent. After it returns the callback is not running (unless this is
  // the callback) and will not run again.
  void Disable();

 private:
  friend class VirqfdLoop;
  Virqfd(std::shared_ptr<internal::VirqfdCore> core, uint64_t id)
      : core_(std::move(core)), id_(id) {}

  std::shared_ptr<internal::VirqfdCore> core_;
  uint64_t id_ = 0;
};

// A single epoll thread serving many Virqfds. Started and stopped explicitly;
// the destructor stops it. Handles may outlive the loop (they then only
// unregister). Thread-safe, except that Start/Stop must not race each other
// and Stop must not be called from a callback.
class VirqfdLoop {
 public:
  static Result<VirqfdLoop> Create();
  VirqfdLoop(VirqfdLoop&&) noexcept = default;
  VirqfdLoop& operator=(VirqfdLoop&&) = delete;
  VirqfdLoop(const VirqfdLoop&) = delete;
  VirqfdLoop& operator=(const VirqfdLoop&) = delete;
  ~VirqfdLoop();

  // EBUSY if already running.
  Result<void> Start();
  // Joins the loop thread; callbacks signalled but not yet run are dropped.
  void Stop();

  // Takes |eventfd|. Each fire reads (clears) its counter, then runs
  // |on_fire| on the loop thread. Errors: EINVAL for an invalid fd or an empty
  // callback; epoll_ctl's errno (EPERM for a descriptor that cannot be polled).
  Result<Virqfd> Watch(UniqueFd eventfd, std::function<void()> on_fire);

  // Waits until every eventfd signalled before the call has had its callback
  // run. Returns at once if the loop is not running; from a callback it runs
  // the pending callbacks inline.
  void Flush();

 private:
  explicit VirqfdLoop(std::shared_ptr<internal::VirqfdCore> core) : core_(std::move(core)) {}

  std::shared_ptr<internal::VirqfdCore> core_;
  std::thread thread_;
};

}  // namespace umdev::irq
