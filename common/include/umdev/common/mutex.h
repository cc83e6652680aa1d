// Mutex, MutexLock and CondVar: std primitives carrying thread-safety annotations.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "umdev/common/thread_annotations.h"

namespace umdev {

// libstdc++'s std::mutex is not annotated; this wrapper is. Thread-safe.
class UMDEV_CAPABILITY("mutex") Mutex {
 public:
  void Lock() UMDEV_ACQUIRE() { mu_.lock(); }
  void Unlock() UMDEV_RELEASE() { mu_.unlock(); }
  std::mutex& native() { return mu_; }

 private:
  std::mutex mu_;
};

// Holds a Mutex for its scope.
class UMDEV_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) UMDEV_ACQUIRE(mu) : mu_(mu) { mu_.Lock(); }
  ~MutexLock() UMDEV_RELEASE() { mu_.Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

// A condition variable used with Mutex. Thread-safe.
class CondVar {
 public:
  void Wait(Mutex& mu) UMDEV_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu.native(), std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  // Returns false on timeout.
  template <typename Rep, typename Period>
  bool WaitFor(Mutex& mu, std::chrono::duration<Rep, Period> timeout) UMDEV_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu.native(), std::adopt_lock);
    const bool woken = cv_.wait_for(lock, timeout) == std::cv_status::no_timeout;
    lock.release();
    return woken;
  }
  void NotifyAll() { cv_.notify_all(); }
  void NotifyOne() { cv_.notify_one(); }

 private:
  std::condition_variable cv_;
};

}  // namespace umdev
