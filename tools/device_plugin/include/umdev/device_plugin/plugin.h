// umdev-device-plugin's main loop: keeps each configured resource's
// instances in umdevd, publishes their health to kubelet through one
// DevicePlugin server per resource, registers (again, whenever kubelet
// restarts), and keeps the CDI spec of the running devices in sync.
#pragma once

#include "umdev/device_plugin/config.h"

namespace umdev::device_plugin {

// Runs until SIGTERM or SIGINT (which the caller must have blocked in every
// thread, so that the loop reads them from a signalfd); then stops the
// servers and removes their sockets. The instances stay defined. Returns
// the process's exit status.
int RunPlugin(const PluginConfig& config);

}  // namespace umdev::device_plugin
