// libFuzzer target: the FUSE write handlers of the sysfs tree (create,
// remove, vendor attributes), as `echo DATA > FILE` reaches them. Byte 0
// picks the file; the rest is what is written.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "umdev/mdev_core/registry.h"
#include "umdev/sysfs/tree.h"
#include "umdev/vendor/serial/mtty_parent.h"

namespace {

using namespace umdev;

struct World {
  World() : tree(registry) {
    spdlog::set_level(spdlog::level::off);
    registry.RegisterParent(vendor::serial::MttyParent::Create().value()).value();
    registry.CreateMdev("mtty", "mtty-1", device).value();
  }
  Registry registry;
  sysfs::Tree tree;
  Uuid device = Uuid::Generate();
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();
  if (size == 0) return 0;
  const std::string base = "/bus/mdev/devices/" + world->device.ToString();
  const std::string files[] = {
      "/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create",
      "/class/mdev_bus/mtty/mdev_supported_types/mtty-1/create",
      base + "/remove",
      base + "/far_end",
      base + "/pty",
      base + "/mdev_type/name",
      "/class/mdev_bus/mtty/mdev_supported_types/nope/create",
  };
  const std::string& path = files[data[0] % std::size(files)];
  const std::string_view written(reinterpret_cast<const char*>(data + 1), size - 1);
  (void)world->tree.Write(path, written);
  // Keep the world as it was: the device exists, nothing else does.
  for (const auto& mdev : world->registry.Mdevs()) {
    if (mdev.uuid != world->device) (void)world->registry.RemoveMdev(mdev.uuid);
  }
  if (!world->registry.FindGroupOf(world->device).has_value()) {
    (void)world->registry.CreateMdev("mtty", "mtty-1", world->device);
  }
  return 0;
}
