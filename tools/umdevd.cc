// umdevd: the daemon, with the parent drivers this build offers.
#include <fmt/format.h>

#include "umdev/daemon/daemon.h"
#include "umdev/vendor/gpu/gpu_parent.h"
#include "umdev/vendor/serial/mtty_parent.h"

namespace {

using umdev::Fail;
using umdev::Result;

// {"driver": "mtty", "name": "mtty", "ports": 24}; name and ports optional.
Result<std::shared_ptr<umdev::ParentDriver>> MakeMtty(const nlohmann::json& entry) {
  umdev::vendor::serial::MttyOptions options;
  for (const auto& [key, value] : entry.items()) {
    if (key == "driver") continue;
    if (key == "name" && value.is_string() && !value.get<std::string>().empty()) {
      options.parent_name = value.get<std::string>();
    } else if (key == "ports" && value.is_number_unsigned() && value.get<uint64_t>() >= 1 &&
               value.get<uint64_t>() <= 4096) {
      options.total_ports = static_cast<unsigned>(value.get<uint64_t>());
    } else {
      return Fail(EINVAL, fmt::format("config: mtty parent: bad or unknown key \"{}\"", key));
    }
  }
  UMDEV_ASSIGN_OR_RETURN(auto parent, umdev::vendor::serial::MttyParent::Create(options));
  return std::shared_ptr<umdev::ParentDriver>(std::move(parent));
}

}  // namespace

int main(int argc, char** argv) {
  return umdev::daemon::RunUmdevd(argc, argv, [](umdev::daemon::Daemon& daemon) {
    daemon.AddParentFactory("mtty", MakeMtty);
    // {"driver": "gpu", ...}: see vendor/gpu/include/umdev/vendor/gpu/gpu_parent.h.
    daemon.AddParentFactory("gpu", umdev::vendor::gpu::MakeGpuParentFromConfig);
  });
}
