// Daemon: umdevd's wiring — configuration, the state-dir lock, the registry
// with its IOMMU drivers and vendor parents, and the control socket.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"
#include "umdev/control/definition_store.h"
#include "umdev/control/server.h"
#include "umdev/daemon/autostart.h"
#include "umdev/mdev_core/registry.h"
#include "umdev/passthrough/passthrough_driver.h"
#include "umdev/sysfs/fuse_server.h"
#include "umdev/sysfs/tree.h"
#include "umdev/vfio_user/server.h"

namespace umdev::daemon {

// Builds one parent from its entry in the "parents" array of the config.
using ParentFactory =
    std::function<Result<std::shared_ptr<ParentDriver>>(const nlohmann::json& entry)>;

// The "vfio_user" section: how device sockets are served.
struct VfioUserConfig {
  unsigned threads = 2;
  std::chrono::milliseconds message_timeout{5000};
  std::optional<uid_t> socket_uid;  // Socket owner; default the daemon's.
  std::optional<gid_t> socket_gid;
  std::vector<uid_t> allowed_uids;  // Peers allowed; empty: the daemon's uid.
};

// The configuration, after validation.
struct Config {
  std::string log_level = "info";
  std::chrono::milliseconds removal_timeout{10000};
  // Locked (pinned) guest memory for the whole daemon; 0: RLIMIT_MEMLOCK.
  uint64_t locked_memory_bytes = 0;
  // Per container; 0: no cap beyond the daemon's.
  uint64_t container_locked_bytes = 0;
  uint32_t max_dma_mappings = 65535;  // Per container (vfio-user max_dma_maps).
  VfioUserConfig vfio_user;
  // Where the mdev sysfs tree is mounted over FUSE ("sysfs_mount", or
  // --sysfs-mount); empty: not mounted.
  std::string sysfs_mount;
  std::vector<nlohmann::json> parents;  // Each has a string "driver".
};

// The configuration `make run` uses when no --config is given.
std::string_view DefaultConfigText();

// Parses and validates |text|. Errors: EINVAL with the offending key named.
Result<Config> ParseConfig(std::string_view text);

struct Options {
  std::string state_dir = "/run/umdev";
  // Where persistent definitions live; empty: STATE_DIR/mdevctl.d. A system
  // service keeps them in /var/lib/umdev/mdevctl.d so they survive reboots
  // while the sockets stay under /run.
  std::string definitions_dir;
  Config config;
};

// Start() and Stop() from the main thread; the registry and control server
// have their own threads.
class Daemon {
 public:
  explicit Daemon(Options options);
  ~Daemon() { Stop(); }

  // Vendor drivers a config may name. Call before Start().
  void AddParentFactory(std::string driver, ParentFactory factory);

  // Creates and locks the state dir, registers the IOMMU drivers and the
  // configured parents (starting their "auto" definitions from
  // DIR/mdevctl.d), serves their instances over vfio-user at
  // DIR/vfio-user/<uuid>.sock, opens DIR/control.sock, and mounts the sysfs
  // tree if the config says where. Errors: EWOULDBLOCK another umdevd holds
  // the state dir; EINVAL unknown driver in the config; the factory's, the
  // registry's, the socket's or the mount's errors.
  Result<void> Start();
  // Unmounts the sysfs tree, closes the control socket and unregisters every
  // parent (removing their instances). Idempotent.
  void Stop();

  Registry& registry() { return *registry_; }
  // The sysfs tree; null before Start().
  const sysfs::Tree* sysfs_tree() const { return sysfs_tree_.get(); }
  // Null before Start().
  vfio_user::Server* vfio_user() { return vfio_user_.get(); }

 private:
  Result<void> LockStateDir();
  Result<void> RegisterParents();
  // {"driver": "passthrough", "devices": ["0000:01:00.0", ...]}: functions
  // bound to the host's vfio-pci, served beside the mdevs. Errors: EINVAL
  // a malformed entry; PassthroughDriver::Add's.
  Result<void> AddPassthrough(const nlohmann::json& entry);

  const Options options_;
  std::map<std::string, ParentFactory> factories_;
  UniqueFd lock_fd_;
  std::unique_ptr<Registry> registry_;
  std::shared_ptr<pinning::LockedMemoryAccount> locked_account_;
  std::unique_ptr<passthrough::VfioKernel> host_vfio_;
  std::unique_ptr<passthrough::PassthroughDriver> passthrough_;
  std::unique_ptr<vfio_user::Server> vfio_user_;
  std::unique_ptr<control::DefinitionStore> definitions_;
  std::unique_ptr<Autostarter> autostart_;
  std::unique_ptr<control::ControlServer> control_;
  std::unique_ptr<sysfs::Tree> sysfs_tree_;
  std::unique_ptr<sysfs::FuseServer> sysfs_fuse_;
};

}  // namespace umdev::daemon

namespace umdev::daemon {

// umdevd's main(): parses --state-dir, --config, --log-level and
// --sysfs-mount, starts a
// Daemon (after |customize| has added parent factories), waits for SIGTERM
// or SIGINT and stops it. Returns the process exit code.
int RunUmdevd(int argc, char** argv, const std::function<void(Daemon&)>& customize);

}  // namespace umdev::daemon
