// Endpoint: one device's socket and the client attached to it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "event_loop.h"
#include "session.h"
#include "umdev/common/mutex.h"
#include "umdev/common/uuid.h"
#include "umdev/mdev_core/registry.h"
#include "umdev/vfio_user/server.h"

namespace umdev::vfio_user {

// Listens on DIR/<uuid>.sock and serves one client at a time. Open/Close from
// any thread (they run their work on the loop); accepting and the session's
// traffic on the loop thread.
class Endpoint {
 public:
  Endpoint(Registry& registry, Uuid uuid, std::string path, EventLoop& loop,
           const ServerOptions& options);
  ~Endpoint() { Close(); }
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  // Binds (mode 0600, owner as configured) and starts accepting.
  Result<void> Open();
  // Drops the client as a disconnect would, stops accepting, unlinks the
  // socket. Idempotent.
  void Close();

  void SetAllowedUids(std::vector<uid_t> uids) UMDEV_EXCLUDES(mu_);
  bool connected() const { return connected_; }

 private:
  void OnAcceptable();
  // Why a connecting peer may not attach, or nothing.
  Result<void> CheckPeer(int fd) UMDEV_EXCLUDES(mu_);
  Result<std::unique_ptr<Session>> Attach(UniqueFd socket);
  void OnSessionReadable();
  void DropSession();

  Registry& registry_;
  const Uuid uuid_;
  const std::string path_;
  const std::string name_;  // For logs.
  EventLoop& loop_;
  const ServerOptions& options_;

  // Loop thread only (after Open).
  UniqueFd listener_;
  uint64_t listen_watch_ = 0;
  std::unique_ptr<Session> session_;
  uint64_t session_watch_ = 0;
  bool closed_ = false;

  std::atomic<bool> connected_{false};
  mutable Mutex mu_;
  std::vector<uid_t> allowed_uids_ UMDEV_GUARDED_BY(mu_);
};

}  // namespace umdev::vfio_user
