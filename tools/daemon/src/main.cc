// RunUmdevd: the daemon's command line and signal handling.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <unistd.h>

#include <fstream>
#include <sstream>

#include "umdev/common/accept.h"
#include "umdev/common/log.h"
#include "umdev/daemon/daemon.h"

namespace umdev::daemon {
namespace {

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Fail(ENOENT, "cannot read config " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

int RunUmdevd(int argc, char** argv, const std::function<void(Daemon&)>& customize) {
  CLI::App app{"umdevd: userspace VFIO and mediated-device daemon"};
  std::string state_dir = "/run/umdev";
  std::string config_path;
  std::string log_level;
  std::string sysfs_mount;
  std::string definitions_dir;
  app.set_version_flag("--version", std::string("umdevd ") + UMDEV_VERSION);
  app.add_option("--state-dir", state_dir, "Runtime state: control socket, device sockets, lock")
      ->capture_default_str();
  app.add_option("--config", config_path, "JSON configuration (default: the embedded one)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off");
  app.add_option("--sysfs-mount", sysfs_mount,
                 "Mount the mdev sysfs tree here over FUSE (DIR plays /sys)");
  app.add_option("--definitions-dir", definitions_dir,
                 "Persistent definitions (mdevctl's format; default: STATE_DIR/mdevctl.d)");
  CLI11_PARSE(app, argc, argv);

  auto text = config_path.empty() ? Result<std::string>(std::string(DefaultConfigText()))
                                  : ReadFile(config_path);
  // libstdc++ 12's std::expected has no and_then().
  auto config = text.has_value() ? ParseConfig(*text) : std::unexpected(text.error());
  if (!config.has_value()) {
    spdlog::critical("umdevd: {}", config.error().Describe());
    return 1;
  }
  if (!log_level.empty()) config->log_level = log_level;
  if (!sysfs_mount.empty()) config->sysfs_mount = sysfs_mount;
  if (auto level = SetLogLevel(config->log_level); !level.has_value()) {
    spdlog::critical("umdevd: {}", level.error().Describe());
    return 1;
  }

  // Block the stop signals before any thread starts, so every thread inherits
  // the mask and only sigwait() below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Each device costs descriptors (its socket, a client, eventfds, memfds):
  // the default soft limit of 1024 would cap a gpu parent at a few hundred.
  if (auto limit = RaiseFdLimit(); limit.has_value()) {
    spdlog::info("umdevd: descriptor limit {}", *limit);
  } else {
    spdlog::warn("umdevd: {}", limit.error().Describe());
  }
  Daemon daemon(Options{.state_dir = state_dir, .definitions_dir = definitions_dir,
                        .config = std::move(*config)});
  customize(daemon);
  if (auto started = daemon.Start(); !started.has_value()) {
    spdlog::critical("umdevd: {}", started.error().Describe());
    (void)sd_notifyf(0, "STATUS=failed: %s\nERRNO=%d", started.error().Describe().c_str(),
                     started.error().code);
    return 1;
  }
  // systemd's Type=notify: ready only now, with the control socket and
  // every configured parent up. A no-op outside systemd (no NOTIFY_SOCKET).
  (void)sd_notifyf(0, "READY=1\nSTATUS=serving %s\nMAINPID=%d", state_dir.c_str(),
                   static_cast<int>(::getpid()));
  int received = 0;
  for (;;) {
    sigwait(&stop_signals, &received);
    if (received != SIGHUP) break;
    // Parents and limits are wired at start; changing them under running
    // guests is not safe, so a new configuration takes a restart.
    spdlog::warn("umdevd: SIGHUP: the configuration is read at start only; restart umdevd to "
                 "apply a new one (systemctl restart umdevd)");
  }
  spdlog::info("umdevd: {} received, shutting down", strsignal(received));
  (void)sd_notify(0, "STOPPING=1\nSTATUS=stopping");
  daemon.Stop();
  spdlog::info("umdevd: stopped");
  return 0;
}

}  // namespace umdev::daemon
