// The control protocol's stats command (see protocol.h): what operators'
// views (umdevctl top, umdevctl stats) show of every instance.
#pragma once

#include <nlohmann/json.hpp>

#include "umdev/mdev_core/registry.h"

namespace umdev::control {

// {"ok":true,"time_ns":T,"devices":[{"uuid","parent","type","open",
// "locked_bytes","migration_state"?,"vm"?,"counters":{...}}]}: counters are
// the vendor attributes busy_ns, commands, bytes, errors where the device
// has them, as numbers. An instance removed meanwhile is left out.
nlohmann::json Stats(Registry& registry);

}  // namespace umdev::control
