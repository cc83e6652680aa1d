// Server: the loop pool and one endpoint per device (mdev or bus device),
// kept in step with the registry.
#include "umdev/vfio_user/server.h"

#include <sys/stat.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>

#include "endpoint.h"
#include "umdev/common/accept.h"
#include "umdev/common/pci_sysfs.h"
#include "event_loop.h"

namespace umdev::vfio_user {

Server::Server(Registry& registry, ServerOptions options)
    : registry_(registry), options_(std::move(options)), group_users_(std::make_unique<GroupUsers>()) {}

Server::~Server() { Stop(); }

std::string Server::SocketPath(std::string_view name) const {
  return (std::filesystem::path(options_.socket_dir) / (std::string(name) + ".sock")).string();
}

Result<void> Server::Start() {
  {
    MutexLock lock(mu_);
    if (started_) return Fail(EBUSY, "vfio-user server already started");
  }
  std::error_code error;
  std::filesystem::create_directories(options_.socket_dir, error);
  if (error) return Fail(error.value(), "create " + options_.socket_dir);
  RemoveStaleSockets();
  ReserveAcceptDescriptor();
  const unsigned threads = std::max(1u, options_.threads);
  for (unsigned i = 0; i < threads; ++i) {
    UMDEV_ASSIGN_OR_RETURN(auto loop, EventLoop::Create(fmt::format("vfio-user-{}", i)));
    loop->Start();
    loops_.push_back(std::move(loop));
  }
  {
    MutexLock lock(mu_);
    started_ = true;
  }
  // Observe first, then add what exists: an instance created in between is
  // seen twice, and AddEndpoint ignores the second.
  registry_.AddObserver(this);
  std::vector<std::string> names;
  for (const MdevStatus& mdev : registry_.Mdevs()) names.push_back(mdev.uuid.ToString());
  for (const BusDeviceStatus& device : registry_.BusDevices()) names.push_back(device.name);
  for (const std::string& name : names) {
    if (auto added = AddEndpoint(name); !added.has_value()) {
      Stop();
      return added;
    }
  }
  spdlog::info("vfio-user: serving devices under {} with {} threads", options_.socket_dir,
               threads);
  return {};
}

void Server::RemoveStaleSockets() const {
  // Sockets of a daemon that was killed: none has a listener any more (the
  // state-dir lock says no other daemon serves here), and a client must not
  // find a path for a device that no longer exists.
  std::error_code error;
  size_t removed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(options_.socket_dir, error)) {
    const std::string name = entry.path().filename().string();
    const std::string stem = name.substr(0, name.size() - std::min<size_t>(name.size(), 5));
    if (!name.ends_with(".sock") ||
        (!Uuid::Parse(stem).has_value() && !pci::NormalizeAddress(stem).has_value())) {
      continue;
    }
    if (std::filesystem::remove(entry.path(), error)) ++removed;
  }
  if (removed != 0) spdlog::info("vfio-user: removed {} stale sockets", removed);
}

void Server::Stop() {
  std::map<std::string, std::shared_ptr<Endpoint>, std::less<>> endpoints;
  {
    MutexLock lock(mu_);
    if (!started_) return;
    started_ = false;
    endpoints.swap(endpoints_);
  }
  registry_.RemoveObserver(this);
  for (auto& [name, endpoint] : endpoints) endpoint->Close();
  endpoints.clear();
  for (auto& loop : loops_) loop->Stop();
  loops_.clear();
}

Result<void> Server::AddEndpoint(const std::string& name) {
  std::shared_ptr<Endpoint> endpoint;
  {
    MutexLock lock(mu_);
    if (!started_ || endpoints_.contains(name)) return {};
    EventLoop& loop = *loops_[next_loop_++ % loops_.size()];
    endpoint =
        std::make_shared<Endpoint>(registry_, *group_users_, name, SocketPath(name), loop, options_);
    endpoints_.emplace(name, endpoint);
  }
  if (auto opened = endpoint->Open(); !opened.has_value()) {
    MutexLock lock(mu_);
    endpoints_.erase(name);
    return std::unexpected(Wrap(opened.error(), "vfio-user socket for " + name));
  }
  return {};
}

void Server::RemoveEndpoint(const std::string& name) {
  std::shared_ptr<Endpoint> endpoint;
  {
    MutexLock lock(mu_);
    auto it = endpoints_.find(name);
    if (it == endpoints_.end()) return;
    endpoint = std::move(it->second);
    endpoints_.erase(it);
  }
  endpoint->Close();
}

Result<void> Server::PrepareMdev(const Uuid& uuid) { return PrepareDevice(uuid.ToString()); }

void Server::AbandonMdev(const Uuid& uuid) { RemoveEndpoint(uuid.ToString()); }

void Server::OnMdevCreated(const MdevStatus& mdev) {
  if (auto added = AddEndpoint(mdev.uuid.ToString()); !added.has_value()) {
    spdlog::error("vfio-user: {}", added.error().Describe());
  }
}

void Server::OnMdevRemoved(const MdevStatus& mdev) { RemoveEndpoint(mdev.uuid.ToString()); }

Result<void> Server::PrepareDevice(const std::string& name) {
  if (auto added = AddEndpoint(name); !added.has_value()) {
    spdlog::error("vfio-user: refusing device {}: {}", name, added.error().Describe());
    return added;
  }
  return {};
}

void Server::AbandonDevice(const std::string& name) { RemoveEndpoint(name); }

void Server::OnDeviceRegistered(const BusDeviceStatus& device) {
  if (auto added = AddEndpoint(device.name); !added.has_value()) {
    spdlog::error("vfio-user: {}", added.error().Describe());
  }
}

void Server::OnDeviceUnregistered(const BusDeviceStatus& device) { RemoveEndpoint(device.name); }

Result<void> Server::SetAllowedUids(const Uuid& uuid, std::vector<uid_t> uids) {
  MutexLock lock(mu_);
  auto it = endpoints_.find(uuid.ToString());
  if (it == endpoints_.end()) return Fail(ENODEV, "no vfio-user device " + uuid.ToString());
  it->second->SetAllowedUids(std::move(uids));
  return {};
}

bool Server::IsConnected(const Uuid& uuid) const {
  MutexLock lock(mu_);
  auto it = endpoints_.find(uuid.ToString());
  return it != endpoints_.end() && it->second->connected();
}

}  // namespace umdev::vfio_user
