// ControlServer: serves the control protocol on a UNIX socket for a Registry.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/common/unique_fd.h"
#include "umdev/mdev_core/registry.h"
#include "umdev/sysfs/tree.h"

namespace umdev::control {

class DefinitionStore;

// Answers one request; public so the protocol is testable without sockets.
// Thread-safe (the Registry and the store are). With no |store| the
// definition verbs answer EOPNOTSUPP. The sysfs-* commands use |tree|, or a
// Tree of |registry| without vfio_user_socket attributes when it is null.
nlohmann::json HandleRequest(Registry& registry, DefinitionStore* store,
                             const nlohmann::json& request, const sysfs::Tree* tree = nullptr);
nlohmann::json HandleRequest(Registry& registry, const nlohmann::json& request,
                             const sysfs::Tree* tree = nullptr);

// Start() and Stop() from one thread; connections are served on their own
// threads (at most kMaxConnections at once; more are refused with EBUSY).
class ControlServer {
 public:
  static constexpr size_t kMaxConnections = 32;

  // |store| may be null (no persistent definitions); |tree| (optional)
  // serves the sysfs-* commands. Both are not owned and must outlive Stop().
  ControlServer(Registry& registry, std::string socket_path, DefinitionStore* store = nullptr,
                const sysfs::Tree* tree = nullptr);
  ~ControlServer() { Stop(); }

  // Binds |socket_path| (mode 0600, replacing a stale socket) and starts
  // accepting. Errors: socket/bind/listen errno.
  Result<void> Start();
  // Stops accepting, disconnects clients, joins every thread, unlinks the socket.
  void Stop();

 private:
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  void AcceptLoop();
  void Serve(UniqueFd connection);
  // Joins workers whose connection has ended.
  void ReapLocked() UMDEV_REQUIRES(mu_);

  Registry& registry_;
  DefinitionStore* const store_;
  const sysfs::Tree* const tree_;
  const std::string socket_path_;
  UniqueFd listener_;
  UniqueFd wake_;  // eventfd: Stop() wakes every poll().
  std::thread acceptor_;
  Mutex mu_;
  size_t active_ UMDEV_GUARDED_BY(mu_) = 0;
  std::vector<Worker> workers_ UMDEV_GUARDED_BY(mu_);
  bool stopping_ UMDEV_GUARDED_BY(mu_) = false;
};

}  // namespace umdev::control
