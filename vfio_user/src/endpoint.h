// Endpoint: one device's socket and the client attached to it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "event_loop.h"
#include "session.h"
#include "umdev/common/mutex.h"
#include "umdev/kvm/client_vm.h"
#include "umdev/kvm/vfio_file.h"
#include "umdev/mdev_core/registry.h"
#include "umdev/vfio_user/server.h"

namespace umdev::vfio_user {

class SharedAddressSpace;

// The group files opened for clients, by IOMMU group. The devices of a real
// group with several devices, used by one client over several sessions,
// share one group file, container and address space (the kernel lets a
// group be in one container); another client is refused while one holds
// it. Owned by the Server, shared by its endpoints. Thread-safe.
struct GroupUsers {
  struct Holder {
    std::shared_ptr<GroupFile> file;
    std::shared_ptr<Container> container;
    std::unique_ptr<kvm::KvmVfioFile> kvm_file;
    // Set when the group holds several devices: the sessions' views map
    // through it (shared_iommu.h).
    std::shared_ptr<SharedAddressSpace> space;
    pid_t pid = 0;  // The client holding it.
  };
  Mutex mu;
  std::map<unsigned, std::weak_ptr<Holder>> holders UMDEV_GUARDED_BY(mu);
};

// Listens on DIR/<name>.sock and serves one client at a time. Open/Close from
// any thread (they run their work on the shared loop, which accepts). Each
// attached client is served on a thread of its own (a one-thread EventLoop):
// a client that stalls its device (a slow vendor call, a DMA reply it never
// sends, replies it never reads) stalls only that thread, never the shared
// loop or another device.
class Endpoint : public std::enable_shared_from_this<Endpoint> {
 public:
  Endpoint(Registry& registry, GroupUsers& groups, std::string name, std::string path,
           EventLoop& loop, const ServerOptions& options);
  ~Endpoint() { Close(); }
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  // Binds (mode 0600, owner as configured) and starts accepting.
  Result<void> Open();
  // Drops the client as a disconnect would, stops accepting, unlinks the
  // socket. Idempotent.
  void Close();

  void SetAllowedUids(std::vector<uid_t> uids) UMDEV_EXCLUDES(mu_);
  // A client is attached, or its thread is still being joined.
  bool connected() const { return connected_; }

 private:
  // The attached client: its thread, and the session that thread serves.
  struct Client {
    std::unique_ptr<EventLoop> loop;
    // A duplicate of the connection, kept until the client is joined: the
    // client sees the connection end only once the endpoint can take a new
    // one, and the shared loop can tell whether the peer has hung up.
    UniqueFd connection;
    // Client thread only: who the client is, its session, and the watches on
    // its socket and on its process (a pidfd: the session ends when the VM
    // process exits, even if a child still holds the socket).
    std::shared_ptr<kvm::ClientVm> peer;
    std::unique_ptr<Session> session;
    uint64_t watch = 0;
    uint64_t pid_watch = 0;
    std::atomic<bool> gone{false};     // The session was dropped; the thread idles.
  };

  void OnAcceptable();
  // Whether the other end of |connection| has closed it.
  static bool PeerHungUp(int connection);
  // Why a connecting peer may not attach, or nothing.
  Result<void> CheckPeer(int fd) UMDEV_EXCLUDES(mu_);
  // Client thread: identifies the client, opens the device for it and serves
  // it; a client the device refuses gets the errno in reply to its first
  // message, then the connection closes.
  void ServeClient(Client& client, UniqueFd socket);
  // Opens the device the way QEMU with KVM does: group file, container,
  // type1v2, KVM's hold on the file with the VM recorded, then the device.
  Result<OpenedDevice> OpenDevice(const std::shared_ptr<kvm::ClientVm>& vm);
  void RefuseClient(int socket, const Error& why) const;
  // Client thread: serves the socket; when the session ends, asks the shared
  // loop to join the thread.
  void OnSessionReadable(Client& client);
  void OnClientExited(Client& client);
  void FinishClient(Client& client);
  void EndSession(Client& client) const;
  // Shared loop: joins the thread of a client whose session has ended.
  void ReapEndedClient();
  // Shared loop: ends the session (if any) and joins the client's thread.
  void DropClient();

  Registry& registry_;
  GroupUsers& groups_;
  const std::string path_;
  const std::string name_;  // The device's: an mdev's UUID string, a bus device's address.
  EventLoop& loop_;
  const ServerOptions& options_;

  // Shared loop thread only (after Open).
  UniqueFd listener_;
  uint64_t listen_watch_ = 0;
  std::unique_ptr<Client> client_;
  bool closed_ = false;

  std::atomic<bool> connected_{false};
  mutable Mutex mu_;
  std::vector<uid_t> allowed_uids_ UMDEV_GUARDED_BY(mu_);
};

}  // namespace umdev::vfio_user
