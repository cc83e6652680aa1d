// Daemon: start-up and shutdown of umdevd's parts.
#include "umdev/daemon/daemon.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <limits>

#include "umdev/pinning/type1_driver.h"

namespace umdev::daemon {

Daemon::Daemon(Options options) : options_(std::move(options)) {}

void Daemon::AddParentFactory(std::string driver, ParentFactory factory) {
  factories_[std::move(driver)] = std::move(factory);
}

Result<void> Daemon::LockStateDir() {
  std::error_code ec;
  std::filesystem::create_directories(options_.state_dir, ec);
  if (ec) return Fail(ec.value(), "create state dir " + options_.state_dir);
  // Others may traverse (not list) it to reach a vfio-user socket whose
  // owner the config set; every socket in it is 0600.
  ::chmod(options_.state_dir.c_str(), 0711);
  const std::string path = options_.state_dir + "/umdevd.lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return FailErrno("open " + path);
  // flock() ends with the process, so a crashed daemon never blocks the next.
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Fail(EWOULDBLOCK, "another umdevd is running on " + options_.state_dir);
    }
    return FailErrno("lock " + path);
  }
  const std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), pid.data(), pid.size(), 0) < 0) {
    return FailErrno("write " + path);
  }
  lock_fd_ = std::move(fd);
  return {};
}

Result<void> Daemon::AddPassthrough(const nlohmann::json& entry) {
  // Bounded before anything is opened: a config names tens of functions.
  constexpr size_t kMaxDevices = 256;
  const auto devices = entry.find("devices");
  if (devices == entry.end() || !devices->is_array() || devices->size() > kMaxDevices ||
      !std::all_of(devices->begin(), devices->end(),
                   [](const nlohmann::json& d) { return d.is_string(); })) {
    return Fail(EINVAL, fmt::format("config: passthrough needs \"devices\": an array of at most "
                                    "{} PCI addresses",
                                    kMaxDevices));
  }
  if (passthrough_ == nullptr) {
    host_vfio_ = passthrough::SystemVfioKernel();
    passthrough_ = std::make_unique<passthrough::PassthroughDriver>(*registry_, *host_vfio_,
                                                                    pci::Sysfs(), locked_account_);
  }
  for (const auto& device : *devices) {
    UMDEV_TRY(passthrough_->Add(device.get<std::string>()));
  }
  return {};
}

Result<void> Daemon::RegisterParents() {
  for (const auto& entry : options_.config.parents) {
    const auto driver = entry["driver"].get<std::string>();
    if (driver == "passthrough") {
      UMDEV_TRY(AddPassthrough(entry));
      continue;
    }
    auto factory = factories_.find(driver);
    if (factory == factories_.end()) {
      return Fail(EINVAL, fmt::format("config: unknown parent driver \"{}\"", driver));
    }
    UMDEV_ASSIGN_OR_RETURN(std::shared_ptr<ParentDriver> parent, factory->second(entry));
    UMDEV_TRY(registry_->RegisterParent(std::move(parent)));
  }
  return {};
}

Result<void> Daemon::Start() {
  UMDEV_TRY(LockStateDir());
  registry_ = std::make_unique<Registry>(RegistryOptions{
      .removal_bound = options_.config.removal_timeout,
      .request_interval = std::min(options_.config.removal_timeout,
                                   std::chrono::milliseconds(1000)),
  });
  const Config& config = options_.config;
  // One budget for what the type1 backend pins and what passthrough maps.
  locked_account_ = std::make_shared<pinning::LockedMemoryAccount>(
      config.locked_memory_bytes != 0 ? config.locked_memory_bytes
                                      : pinning::LockedMemoryAccount::DefaultLimit());
  pinning::Type1Limits limits;
  limits.max_mappings = config.max_dma_mappings;
  if (config.container_locked_bytes != 0) limits.container_locked_limit = config.container_locked_bytes;
  UMDEV_TRY(registry_->iommu_drivers().Register(
      std::make_shared<pinning::Type1Driver>(locked_account_, limits)));
  // The server observes the registry before parents exist, so instances
  // made at any time get a socket.
  vfio_user::ServerOptions server;
  server.socket_dir = options_.state_dir + "/vfio-user";
  server.threads = config.vfio_user.threads;
  server.message_timeout = config.vfio_user.message_timeout;
  server.socket_uid = config.vfio_user.socket_uid;
  server.socket_gid = config.vfio_user.socket_gid;
  server.allowed_uids = config.vfio_user.allowed_uids;
  vfio_user_ = std::make_unique<vfio_user::Server>(*registry_, std::move(server));
  UMDEV_TRY(vfio_user_->Start());
  // Definitions start as their parent registers, at start-up or later; the
  // vfio-user server observes first so autostarted instances get sockets.
  // The directory exists even when empty, as mdevctl's package ships
  // /etc/mdevctl.d: stock mdevctl refuses to run without it.
  const std::string definitions_dir = options_.definitions_dir.empty()
                                          ? options_.state_dir + "/mdevctl.d"
                                          : options_.definitions_dir;
  if (::mkdir(definitions_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return FailErrno("mkdir " + definitions_dir);
  }
  definitions_ = std::make_unique<control::DefinitionStore>(definitions_dir);
  if (const size_t removed = definitions_->RemoveUnfinishedWrites(); removed != 0) {
    spdlog::warn("mdevctl.d: removed {} definitions a killed daemon left half written", removed);
  }
  autostart_ = std::make_unique<Autostarter>(*registry_, *definitions_);
  registry_->AddObserver(autostart_.get());
  UMDEV_TRY(RegisterParents());
  vfio_user::Server* sockets = vfio_user_.get();
  sysfs_tree_ = std::make_unique<sysfs::Tree>(
      *registry_, sysfs::TreeOptions{.socket_path = [sockets](std::string_view name) {
        return sockets->SocketPath(name);
      }});
  if (!config.sysfs_mount.empty()) {
    sysfs_fuse_ = std::make_unique<sysfs::FuseServer>(*sysfs_tree_, config.sysfs_mount);
    UMDEV_TRY(sysfs_fuse_->Start());
  }
  // Last: a control socket tells clients that everything else is ready.
  control_ = std::make_unique<control::ControlServer>(
      *registry_, options_.state_dir + "/control.sock", definitions_.get(), sysfs_tree_.get());
  UMDEV_TRY(control_->Start());
  spdlog::info("umdevd: listening on {}/control.sock", options_.state_dir);
  return {};
}

void Daemon::Stop() {
  // The tree's users go first: nothing may create instances while the
  // parents are being unregistered.
  if (sysfs_fuse_ != nullptr) sysfs_fuse_->Stop();
  sysfs_fuse_.reset();
  if (control_ != nullptr) control_->Stop();
  control_.reset();
  if (vfio_user_ != nullptr) vfio_user_->Stop();  // Clients go before their devices.
  vfio_user_.reset();
  if (autostart_ != nullptr) registry_->RemoveObserver(autostart_.get());
  autostart_.reset();
  sysfs_tree_.reset();
  passthrough_.reset();  // Its devices leave the registry, then the host's groups close.
  host_vfio_.reset();
  registry_.reset();  // Unregisters every parent and removes their instances.
  definitions_.reset();
  lock_fd_.Reset();
}

}  // namespace umdev::daemon
