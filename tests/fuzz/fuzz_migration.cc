// libFuzzer target: the mtty and gpu migration streams, as a destination
// daemon receives them (RESUMING, MIG_DATA_WRITE, then STOP), and the mtty
// stream decoder alone. Byte 0 picks the device; the rest is the stream,
// written in pieces whose sizes byte 1 sets.
#include <linux/vfio.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz_world.h"
#include "umdev/mdev_core/container.h"
#include "umdev/mdev_core/device.h"
#include "umdev/mdev_core/registry.h"
#include "umdev/pinning/type1_driver.h"
#include "umdev/vendor/gpu/gpu_parent.h"
#include "umdev/vendor/serial/migration_stream.h"
#include "umdev/vendor/serial/mtty_parent.h"

namespace {

using namespace umdev;

struct World {
  World() {
    fuzz::PrepareRegistry(registry);
    registry.RegisterParent(vendor::serial::MttyParent::Create().value()).value();
    fuzz::RegisterCpuGpu(registry);
    registry.CreateMdev("mtty", "mtty-2", devices[0]).value();
    registry.CreateMdev("gpu0", "gpu-1of2", devices[1]).value();
  }
  Registry registry;
  Uuid devices[2] = {Uuid::Generate(), Uuid::Generate()};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();
  if (size < 2) return 0;
  const auto stream = std::as_bytes(std::span(data + 2, size - 2));
  const vendor::serial::FarEndKind far_ends[2] = {vendor::serial::FarEndKind::kLoopback,
                                                  vendor::serial::FarEndKind::kLoopback};
  (void)vendor::serial::DecodeStream(stream, far_ends);

  const Uuid& uuid = world->devices[data[0] & 1];
  auto group = world->registry.FindGroupOf(uuid);
  if (!group.has_value()) return 0;
  auto space = AddressSpace::Create(world->registry.iommu_drivers(), VFIO_TYPE1v2_IOMMU);
  if (!space.has_value()) return 0;
  auto file = OpenDeviceCdev(*group, *space);
  if (!file.has_value()) return 0;
  DeviceFile& device = **file;
  if (device.SetMigrationState(VFIO_DEVICE_STATE_STOP).has_value() &&
      device.SetMigrationState(VFIO_DEVICE_STATE_RESUMING).has_value()) {
    const size_t piece = 1 + data[1] * 16u;
    for (size_t at = 0; at < stream.size(); at += piece) {
      if (!device.MigrationWrite(stream.subspan(at, std::min(piece, stream.size() - at)))
               .has_value()) {
        break;
      }
    }
    if (device.SetMigrationState(VFIO_DEVICE_STATE_STOP).has_value()) {
      (void)device.SetMigrationState(VFIO_DEVICE_STATE_RUNNING);
    }
  }
  return 0;
}
