// LineEnd and LineThread: the host side of mtty ports whose far end is a
// pseudo-terminal or a UNIX socket, and the one thread that moves their bytes.
#pragma once

#include <poll.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"
#include "umdev/vendor/serial/far_end.h"

namespace umdev::vendor::serial {

// One port's far end. Move-only; destroying it closes its descriptors and
// removes the socket path it bound. Thread-compatible (the device's lock).
class LineEnd {
 public:
  LineEnd() = default;
  LineEnd(LineEnd&& other) noexcept = default;
  LineEnd& operator=(LineEnd&& other) = delete;
  ~LineEnd();

  // A pty in raw mode: the device holds the master and keeps a slave open so
  // the master never reads a hangup while no one has the slave open.
  // Errors: posix_openpt/grantpt/unlockpt/open/tcsetattr errno.
  static Result<LineEnd> OpenPty();
  // A listening socket at |path| (a stale socket there is replaced; any
  // other file is EADDRINUSE). Errors: ENAMETOOLONG, socket/bind/listen errno.
  static Result<LineEnd> Listen(const std::string& path);

  // The descriptor bytes flow through: the pty master or the socket client;
  // -1 when a socket has no client.
  int data_fd() const { return data_.get(); }
  int listener_fd() const { return listener_.get(); }
  const std::string& path() const { return path_; }
  bool connected() const { return data_.valid(); }
  // Socket only: takes a pending connection; a second client is refused
  // (closed) while one is connected. Returns whether a client was added.
  bool Accept();
  // Socket only: drops the client (it hung up or failed).
  void Disconnect() { data_.Reset(); }

 private:
  UniqueFd data_;
  UniqueFd pty_slave_;
  UniqueFd listener_;
  std::string path_;
};

// Opens the far ends of |ports| ports for |spec| (none for loopback).
Result<std::vector<LineEnd>> OpenLineEnds(const FarEndSpec& spec, unsigned ports);

// A thread that poll()s what |interest| lists and hands the results to
// |serve|, until destroyed. Both callbacks run on the thread; each takes the
// device's lock itself. Kick() makes it ask |interest| again (after the
// device's state changed what it should wait for). Thread-safe.
class LineThread {
 public:
  using InterestFn = std::function<std::vector<pollfd>()>;
  using ServeFn = std::function<void(const std::vector<pollfd>&)>;

  // Errors: eventfd errno.
  static Result<std::unique_ptr<LineThread>> Start(InterestFn interest, ServeFn serve);
  // Stops and joins; must not be called with a lock the callbacks take.
  ~LineThread();

  // Async-signal-safe in spirit: one eventfd write, no lock.
  void Kick() const;
  int wake_fd() const { return wake_.get(); }

 private:
  LineThread(UniqueFd wake, InterestFn interest, ServeFn serve);
  void Run();

  UniqueFd wake_;
  InterestFn interest_;
  ServeFn serve_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace umdev::vendor::serial
