// Server: serves every device of a registry (mdev instances and bus
// drivers' devices) over vfio-user, one UNIX socket per device (QEMU:
// -device vfio-user-pci,socket=...).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/common/uuid.h"
#include "umdev/kvm/client_vm.h"
#include "umdev/mdev_core/registry.h"

namespace umdev::vfio_user {

class EventLoop;
class Endpoint;
struct GroupUsers;

struct ServerOptions {
  // Sockets are DIR/<uuid>.sock; DIR is created (mode 0755) if missing.
  std::string socket_dir;
  // Event-loop threads shared by all devices (at least 1).
  unsigned threads = 2;
  // Owner given to each socket (mode 0600); nullopt keeps the daemon's.
  std::optional<uid_t> socket_uid;
  std::optional<gid_t> socket_gid;
  // Peers (SO_PEERCRED uid) a device accepts unless SetAllowedUids says
  // otherwise. Empty: the daemon's own uid only.
  std::vector<uid_t> allowed_uids;
  // How long a reply from the client (DMA_READ/DMA_WRITE) or a blocked send
  // may take; QEMU's own per-message timeout is 5 s.
  std::chrono::milliseconds message_timeout{5000};
  // Capabilities offered in VERSION.
  uint32_t max_msg_fds = 16;
  uint64_t max_data_xfer_size = 1u << 20;
  // How clients' VMs are identified (docs/kvm.md).
  kvm::IdentifyOptions identify;
};

// Thread-safe. Registry observer calls arrive on the thread that created or
// removed an instance; connections are served on the loop threads.
class Server final : private RegistryObserver {
 public:
  Server(Registry& registry, ServerOptions options);
  ~Server() override;
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Creates the socket dir, starts the loops, and opens a socket for every
  // instance that exists now and every one created later. Errors: mkdir's,
  // or a socket's errno for an existing instance.
  Result<void> Start() UMDEV_EXCLUDES(mu_);
  // Disconnects every client (their DMA is unmapped, their devices closed),
  // removes the sockets and joins the loops. Idempotent.
  void Stop() UMDEV_EXCLUDES(mu_);

  // DIR/<name>.sock: an mdev's UUID string, a bus device's address.
  std::string SocketPath(std::string_view name) const;
  std::string SocketPath(const Uuid& uuid) const { return SocketPath(uuid.ToString()); }
  // Replaces a device's peer allow-list (the default is the server's). Takes
  // effect at the next connection. Errors: ENODEV no such instance.
  Result<void> SetAllowedUids(const Uuid& uuid, std::vector<uid_t> uids) UMDEV_EXCLUDES(mu_);
  // Whether a client is attached to the instance.
  bool IsConnected(const Uuid& uuid) const UMDEV_EXCLUDES(mu_);

 private:
  // Unlinks DIR/<uuid>.sock files left by a daemon that did not stop.
  void RemoveStaleSockets() const;
  // The socket is bound before the instance is visible, so an instance
  // never exists without one: at the descriptor limit the create fails.
  Result<void> PrepareMdev(const Uuid& uuid) override;
  void AbandonMdev(const Uuid& uuid) override;
  void OnMdevCreated(const MdevStatus& mdev) override;
  void OnMdevRemoved(const MdevStatus& mdev) override;
  // A bus driver's devices are served the same way, named by address.
  Result<void> PrepareDevice(const std::string& name) override;
  void AbandonDevice(const std::string& name) override;
  void OnDeviceRegistered(const BusDeviceStatus& device) override;
  void OnDeviceUnregistered(const BusDeviceStatus& device) override;
  Result<void> AddEndpoint(const std::string& name) UMDEV_EXCLUDES(mu_);
  void RemoveEndpoint(const std::string& name) UMDEV_EXCLUDES(mu_);

  Registry& registry_;
  const ServerOptions options_;
  std::vector<std::unique_ptr<EventLoop>> loops_;
  // Declared before the endpoints, which borrow it.
  const std::unique_ptr<GroupUsers> group_users_;
  mutable Mutex mu_;
  bool started_ UMDEV_GUARDED_BY(mu_) = false;
  unsigned next_loop_ UMDEV_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::shared_ptr<Endpoint>, std::less<>> endpoints_ UMDEV_GUARDED_BY(mu_);
};

}  // namespace umdev::vfio_user
