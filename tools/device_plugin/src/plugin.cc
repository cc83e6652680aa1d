#include "umdev/device_plugin/plugin.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <memory>
#include <set>

#include "daemon_link.h"
#include "resource_endpoint.h"
#include "umdev/cli/cdi.h"
#include "umdev/common/unique_fd.h"
#include "umdev/common/uuid.h"

namespace umdev::device_plugin {

namespace {

constexpr const char* kKubeletSocket = "kubelet.sock";

// Poll-loop thread only: the whole plugin but the gRPC handlers.
class Plugin {
 public:
  explicit Plugin(const PluginConfig& config)
      : config_(config), board_(config.resources.size()), daemon_(config.state_dir) {
    std::error_code ec;
    const SocketLayout layout{
        std::filesystem::absolute(config.HostSocketDir(), ec).lexically_normal().string(),
        config.container_dir};
    for (size_t i = 0; i < config.resources.size(); ++i) {
      endpoints_.push_back(
          std::make_unique<ResourceEndpoint>(config.resources[i], i, board_, layout, config.plugin_dir));
    }
  }

  int Run();

 private:
  Result<void> Watch();
  void Refresh();
  void Reconcile(const DaemonView& view);
  void Publish(const DaemonView* view);
  void SyncCdi(const DaemonView& view);
  void KeepRegistered();
  // Reads inotify events: a socket of ours deleted, kubelet's created.
  void OnFolderEvents();

  const PluginConfig& config_;
  DeviceBoard board_;
  DaemonLink daemon_;
  std::vector<std::unique_ptr<ResourceEndpoint>> endpoints_;
  UniqueFd inotify_;
  UniqueFd signals_;
  bool daemon_seen_ = false;  // The last poll reached umdevd.
  std::set<std::string> last_parents_;
  std::vector<std::vector<DeviceState>> last_devices_;
  std::string last_cdi_;
  bool kubelet_restarted_ = true;  // Start and register everything.
  std::set<std::string> register_failing_;  // Endpoints whose last Register failed.
};

Result<void> Plugin::Watch() {
  std::error_code ec;
  std::filesystem::create_directories(config_.plugin_dir, ec);
  inotify_.Reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!inotify_) return FailErrno("inotify_init1");
  if (::inotify_add_watch(inotify_.get(), config_.plugin_dir.c_str(),
                          IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO) < 0) {
    return FailErrno("watch " + config_.plugin_dir);
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  signals_.Reset(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!signals_) return FailErrno("signalfd");
  return {};
}

void Plugin::OnFolderEvents() {
  alignas(inotify_event) std::array<char, 4096> buffer{};
  for (;;) {
    const ssize_t n = ::read(inotify_.get(), buffer.data(), buffer.size());
    if (n <= 0) return;
    for (ssize_t at = 0; at < n;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer.data() + at);
      const std::string name = event->len > 0 ? event->name : "";
      if ((event->mask & (IN_CREATE | IN_MOVED_TO)) != 0 && name == kKubeletSocket) {
        spdlog::info("kubelet.sock appeared: registering again");
        kubelet_restarted_ = true;
      }
      if ((event->mask & (IN_DELETE | IN_MOVED_FROM)) != 0) {
        for (const auto& endpoint : endpoints_) {
          if (name == endpoint->endpoint() && endpoint->serving()) {
            spdlog::info("{} was deleted (kubelet restarted?): serving and registering again",
                         endpoint->endpoint());
            kubelet_restarted_ = true;
          }
        }
      }
      at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
    }
  }
}

void Plugin::Reconcile(const DaemonView& view) {
  for (const ResourceSpec& resource : config_.resources) {
    for (const InstanceAction& action :
         PlanInstances(resource, view, [] { return Uuid::Generate().ToString(); })) {
      const char* verb = action.kind == InstanceAction::Kind::kDefine ? "define" : "start";
      if (auto done = daemon_.Apply(action); !done.has_value()) {
        spdlog::warn("{}: cannot {} {} ({} on {}): {}", resource.FullName(), verb, action.uuid, action.type,
                     action.parent, done.error().Describe());
      } else {
        spdlog::info("{}: {} {} ({} on {})", resource.FullName(), action.kind == InstanceAction::Kind::kDefine ? "defined" : "started",
                     action.uuid, action.type, action.parent);
      }
    }
  }
}

void Plugin::Publish(const DaemonView* view) {
  last_devices_.resize(config_.resources.size());
  for (size_t i = 0; i < config_.resources.size(); ++i) {
    if (view != nullptr) {
      last_devices_[i] = DevicesOf(config_.resources[i], *view);
    } else {
      // umdevd is not answering: its devices cannot be used, whatever they were.
      for (DeviceState& d : last_devices_[i]) {
        d.healthy = false;
        d.reason = "umdevd is not answering";
      }
    }
    board_.Publish(i, last_devices_[i]);
  }
}

void Plugin::SyncCdi(const DaemonView& view) {
  if (config_.cdi_output.empty()) return;
  std::vector<cli::CdiDevice> devices;
  for (const auto& [uuid, running] : view.running) devices.push_back({uuid, running.parent, running.type});
  std::error_code ec;
  const cli::CdiLayout layout{
      std::filesystem::absolute(config_.HostSocketDir(), ec).lexically_normal().string(),
      config_.container_dir};
  const std::string text = devices.empty() ? "" : cli::CdiSpec(devices, layout).dump(2) + "\n";
  if (text == last_cdi_) return;
  if (text.empty()) {
    std::filesystem::remove(config_.cdi_output, ec);
  } else if (auto written = cli::WriteFileAtomically(config_.cdi_output, text); !written.has_value()) {
    spdlog::warn("CDI spec not written: {}", written.error().Describe());
    return;  // Tried again at the next poll.
  }
  last_cdi_ = text;
}

void Plugin::Refresh() {
  auto view = daemon_.View();
  if (!view.has_value()) {
    if (daemon_seen_) spdlog::warn("umdevd is not answering: {}", view.error().Describe());
    daemon_seen_ = false;
    Publish(nullptr);
    return;
  }
  // Instances are made (or started) when umdevd is first reached, again
  // after it restarts, and when a configured parent (re)appears; a device
  // stopped by hand in between stays stopped and is reported unhealthy.
  bool reconcile = !daemon_seen_;
  for (const ResourceSpec& resource : config_.resources) {
    for (const ParentPool& pool : resource.parents) {
      if (view->parents.contains(pool.parent) && !last_parents_.contains(pool.parent)) reconcile = true;
    }
  }
  daemon_seen_ = true;
  last_parents_ = view->parents;
  if (reconcile) {
    Reconcile(*view);
    if (auto again = daemon_.View(); again.has_value()) view = std::move(again);
  }
  Publish(&*view);
  SyncCdi(*view);
}

void Plugin::KeepRegistered() {
  const bool restart_all = kubelet_restarted_;
  kubelet_restarted_ = false;
  std::error_code ec;
  const bool kubelet_present =
      std::filesystem::exists(std::filesystem::path(config_.plugin_dir) / kKubeletSocket, ec);
  for (const auto& endpoint : endpoints_) {
    if (restart_all || !endpoint->serving() || endpoint->SocketMissing()) {
      if (auto started = endpoint->Start(); !started.has_value()) {
        spdlog::error("{}", started.error().Describe());
        continue;
      }
    }
    // kubelet may not be up yet: tried again at each poll once its socket
    // exists (its creation is also watched), so that a missing kubelet costs
    // nothing and a slow one at most the registration's timeout per poll.
    if (!endpoint->registered() && kubelet_present) {
      auto registered = endpoint->Register();
      // Said once per run of failures, not at every poll.
      if (!registered.has_value() && !register_failing_.contains(endpoint->endpoint())) {
        spdlog::warn("{} (trying again at each poll)", registered.error().Describe());
      }
      if (registered.has_value()) {
        register_failing_.erase(endpoint->endpoint());
      } else {
        register_failing_.insert(endpoint->endpoint());
      }
    }
  }
}

int Plugin::Run() {
  if (auto watching = Watch(); !watching.has_value()) {
    spdlog::error("{}", watching.error().Describe());
    return 1;
  }
  for (;;) {
    Refresh();
    KeepRegistered();
    std::array<pollfd, 2> fds{{{signals_.get(), POLLIN, 0}, {inotify_.get(), POLLIN, 0}}};
    const int ready = ::poll(fds.data(), fds.size(), static_cast<int>(config_.poll_interval.count()));
    if (ready < 0 && errno != EINTR) {
      spdlog::error("poll: {}", std::strerror(errno));
      break;
    }
    if ((fds[0].revents & POLLIN) != 0) {
      signalfd_siginfo info{};
      if (::read(signals_.get(), &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
        spdlog::info("signal {}: stopping", info.ssi_signo);
      }
      break;
    }
    if ((fds[1].revents & POLLIN) != 0) OnFolderEvents();
  }
  board_.Close();
  for (const auto& endpoint : endpoints_) endpoint->Stop();
  return 0;
}

}  // namespace

int RunPlugin(const PluginConfig& config) {
  Plugin plugin(config);
  return plugin.Run();
}

}  // namespace umdev::device_plugin
