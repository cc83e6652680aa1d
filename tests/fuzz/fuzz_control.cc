// libFuzzer target: control-socket requests (one JSON object per line) against
// a registry with a real mtty parent and a definition store.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

#include "umdev/control/definition.h"
#include "umdev/control/definition_store.h"
#include "umdev/control/server.h"
#include "umdev/mdev_core/registry.h"
#include "umdev/vendor/serial/mtty_parent.h"

namespace {

struct World {
  World() {
    dir = std::filesystem::temp_directory_path() / ("umdev-fuzz-control-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    registry.RegisterParent(umdev::vendor::serial::MttyParent::Create().value()).value();
    store = std::make_unique<umdev::control::DefinitionStore>((dir / "mdevctl.d").string());
  }
  std::filesystem::path dir;
  umdev::Registry registry;
  std::unique_ptr<umdev::control::DefinitionStore> store;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();
  auto request = umdev::control::ParseJsonText(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (!request.has_value()) return 0;
  (void)umdev::control::HandleRequest(world->registry, world->store.get(), *request);
  // Instances a request started are stopped, so every input meets the same world.
  for (const auto& mdev : world->registry.Mdevs()) (void)world->registry.RemoveMdev(mdev.uuid);
  std::error_code ignored;
  std::filesystem::remove_all(world->dir / "mdevctl.d", ignored);
  return 0;
}
