// DaemonLink: the plugin's connection to umdevd's control socket,
// reconnected on demand. Poll-loop thread only.
#pragma once

#include <optional>
#include <string>

#include "umdev/control/client.h"
#include "umdev/device_plugin/inventory.h"

namespace umdev::device_plugin {

class DaemonLink {
 public:
  explicit DaemonLink(std::string state_dir) : socket_(std::move(state_dir) + "/control.sock") {}
  // One consistent look at umdevd. Errors: the connection's or EPROTO.
  Result<DaemonView> View();
  // Defines (start "auto") and starts, or starts. Errors: umdevd's.
  Result<void> Apply(const InstanceAction& action);

 private:
  Result<nlohmann::json> Call(const nlohmann::json& request);
  std::string socket_;
  std::optional<control::ControlClient> client_;
};

}  // namespace umdev::device_plugin
