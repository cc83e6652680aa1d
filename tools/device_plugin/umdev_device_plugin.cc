// umdev-device-plugin: umdev devices as Kubernetes extended resources
// (umdev.io/NAME), for kubelet's device plugin API v1beta1.
// docs/kubernetes.md.
// CLI11 2.1's string splitting trips g++ 12's -Wnull-dereference when inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop
#include <signal.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <iostream>
#include <tuple>

#include "umdev/device_plugin/config.h"
#include "umdev/device_plugin/plugin.h"

namespace {

using umdev::device_plugin::PluginConfig;
using umdev::device_plugin::ResourceSpec;

// The configuration file's "resources" and folders; the command line's
// options, applied afterwards, take precedence. Errors: EINVAL naming what
// is wrong; the open's errno.
umdev::Result<void> LoadConfigFile(const std::string& path, PluginConfig& config,
                                   std::vector<ResourceSpec>& resources) {
  std::ifstream in(path);
  if (!in) return umdev::FailErrno("open " + path);
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return umdev::Fail(EINVAL, path + ": not a JSON object");
  for (const auto& [key, value] : json.items()) {
    if (key == "resources") {
      auto parsed = umdev::device_plugin::ParseResources(value);
      if (!parsed.has_value()) return umdev::FailAs(parsed.error(), path + ": " + parsed.error().context);
      resources.insert(resources.end(), parsed->begin(), parsed->end());
      continue;
    }
    std::string* field = key == "socket_dir"      ? &config.socket_dir
                         : key == "container_dir" ? &config.container_dir
                         : key == "cdi_output"    ? &config.cdi_output
                         : key == "state_dir"     ? &config.state_dir
                                                  : nullptr;
    if (field == nullptr) return umdev::Fail(EINVAL, path + ": unknown key \"" + key + "\"");
    if (!value.is_string()) return umdev::Fail(EINVAL, path + ": \"" + key + "\" is not a string");
    *field = value.get<std::string>();
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"umdev-device-plugin: umdev devices for Kubernetes (device plugin API v1beta1)"};
  PluginConfig defaults;
  PluginConfig flags;
  std::string config_file;
  std::vector<std::string> resource_flags;
  int poll_ms = 1000;
  std::string log_level = "info";
  bool check_only = false;
  app.set_version_flag("--version", std::string("umdev-device-plugin ") + UMDEV_VERSION);
  app.add_option("--resource", resource_flags,
                 "PARENT.TYPE=COUNT: COUNT instances of TYPE on PARENT as umdev.io/PARENT.TYPE (repeatable)");
  app.add_option("--config", config_file, "JSON file with \"resources\" (docs/kubernetes.md)")
      ->check(CLI::ExistingFile);
  auto* state_dir = app.add_option("--state-dir", flags.state_dir, "umdevd's state folder (its control socket)")
                        ->default_str(defaults.state_dir);
  auto* socket_dir = app.add_option("--socket-dir", flags.socket_dir,
                                    "Where umdevd's vfio-user sockets are (default STATE_DIR/vfio-user)");
  auto* plugin_dir = app.add_option("--plugin-dir", flags.plugin_dir, "kubelet's device-plugin folder")
                         ->default_str(defaults.plugin_dir);
  auto* container_dir = app.add_option("--container-dir", flags.container_dir,
                                       "Where the sockets appear in a container")
                            ->default_str(defaults.container_dir);
  auto* cdi_output = app.add_option("--cdi-output", flags.cdi_output,
                                    "The CDI spec kept in sync with the running devices ('' for none)")
                         ->default_str(defaults.cdi_output);
  app.add_option("--poll-interval-ms", poll_ms, "How often umdevd is asked for its devices")
      ->capture_default_str()
      ->check(CLI::Range(10, 60000));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.add_flag("--check-config", check_only, "Check the configuration, print the resources and exit");
  CLI11_PARSE(app, argc, argv);

  const auto refuse = [](const std::string& what) {
    std::cerr << "umdev-device-plugin: " << what << "\n";
    return 2;
  };
  spdlog::set_level(spdlog::level::from_str(log_level));
  PluginConfig config = defaults;
  std::vector<ResourceSpec> resources;
  if (!config_file.empty()) {
    if (auto loaded = LoadConfigFile(config_file, config, resources); !loaded.has_value()) {
      return refuse(loaded.error().context);
    }
  }
  for (auto [option, field, value] : {std::tuple{state_dir, &config.state_dir, flags.state_dir},
                                      std::tuple{socket_dir, &config.socket_dir, flags.socket_dir},
                                      std::tuple{plugin_dir, &config.plugin_dir, flags.plugin_dir},
                                      std::tuple{container_dir, &config.container_dir, flags.container_dir},
                                      std::tuple{cdi_output, &config.cdi_output, flags.cdi_output}}) {
    if (option->count() > 0) *field = value;
  }
  for (const std::string& flag : resource_flags) {
    auto parsed = umdev::device_plugin::ParseResourceFlag(flag);
    if (!parsed.has_value()) return refuse(parsed.error().context);
    resources.push_back(std::move(*parsed));
  }
  if (auto valid = umdev::device_plugin::ValidateResources(resources); !valid.has_value()) {
    return refuse(valid.error().context);
  }
  if (!config.container_dir.starts_with('/')) return refuse("--container-dir must be absolute");
  config.resources = std::move(resources);
  config.poll_interval = std::chrono::milliseconds(poll_ms);
  if (check_only) {
    for (const ResourceSpec& r : config.resources) {
      std::cout << r.FullName() << ": " << r.type << " on";
      for (const auto& pool : r.parents) std::cout << " " << pool.parent << " x" << pool.count;
      std::cout << "\n";
    }
    return 0;
  }

  // Blocked before gRPC starts its threads, so that they inherit the mask and
  // the loop's signalfd is the only reader.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return umdev::device_plugin::RunPlugin(config);
}
