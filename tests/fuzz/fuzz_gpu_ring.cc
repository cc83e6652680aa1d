// libFuzzer target: the gpu command-ring decoder. The input is guest memory
// (64 KiB, mapped at IOVA 0x100000): its first KiB holds the ring's 16
// entries, the rest is data COPY may read; its last byte picks the doorbell
// (trapped or the polled page). The ring runs on the parent's
// scheduler, as a guest's would, until it drains or stops on an error.
#include <linux/vfio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <thread>

#include "fuzz_world.h"
#include "umdev/mdev_core/container.h"
#include "umdev/mdev_core/device.h"
#include "umdev/mdev_core/registry.h"
#include "umdev/pinning/type1_driver.h"
#include "umdev/vendor/gpu/gpu_parent.h"
#include "umdev/vendor/gpu/gpu_regs.h"

namespace {

using namespace umdev;
namespace regs = vendor::gpu::regs;

constexpr uint64_t kRingIova = 0x100000;
constexpr size_t kMemory = 64 * 1024;
constexpr uint32_t kEntries = 16;

struct World {
  World() {
    fuzz::PrepareRegistry(registry);
    fuzz::RegisterCpuGpu(registry);
    registry.CreateMdev("gpu0", "gpu-1of8", device).value();
  }
  Registry registry;
  Uuid device = Uuid::Generate();
};

template <typename T>
void WriteReg(DeviceFile& file, uint32_t offset, T value) {
  (void)file.RegionWrite(VFIO_PCI_BAR0_REGION_INDEX, offset,
                         std::as_bytes(std::span(&value, 1)));
}

uint32_t ReadReg(DeviceFile& file, uint32_t offset) {
  uint32_t value = 0;
  (void)file.RegionRead(VFIO_PCI_BAR0_REGION_INDEX, offset,
                        std::as_writable_bytes(std::span(&value, 1)));
  return value;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();
  if (size > kMemory) return 0;
  auto group = world->registry.FindGroupOf(world->device);
  auto space = AddressSpace::Create(world->registry.iommu_drivers(), VFIO_TYPE1v2_IOMMU);
  if (!group.has_value() || !space.has_value()) return 0;
  auto opened = OpenDeviceCdev(*group, *space);
  if (!opened.has_value()) return 0;
  DeviceFile& file = **opened;

  UniqueFd memory(::memfd_create("guest", MFD_CLOEXEC));
  if (::ftruncate(memory.get(), kMemory) != 0) return 0;
  if (::pwrite(memory.get(), data, size, 0) != static_cast<ssize_t>(size)) return 0;
  DmaMapRequest map;
  map.iova = kRingIova;
  map.size = kMemory;
  map.prot = kProtRead | kProtWrite;
  map.fd = std::move(memory);
  if (!(*space)->iommu()->Map(std::move(map)).has_value()) return 0;

  const uint32_t filled = static_cast<uint32_t>(std::min<size_t>(size / regs::kEntrySize, kEntries - 1));
  WriteReg<uint64_t>(file, regs::kRegQueueBase, kRingIova);
  WriteReg<uint32_t>(file, regs::kRegQueueSize, kEntries);
  // The input's last byte picks the doorbell: bit 0 a polled tail (the
  // doorbell page), bit 1 ringing by a trapped store of DB_TAIL instead of
  // QUEUE_TAIL and DOORBELL.
  const uint8_t mode = size > 0 ? data[size - 1] : 0;
  const bool polled = (mode & 1) != 0;
  WriteReg<uint32_t>(file, regs::kRegQueueCtrl,
                     regs::kQueueEnable | (polled ? regs::kQueueDoorbellPage : 0));
  if ((mode & 2) != 0) {
    (void)file.RegionWrite(VFIO_PCI_BAR4_REGION_INDEX, regs::kDbTail,
                           std::as_bytes(std::span(&filled, 1)));
    if (!polled) WriteReg<uint32_t>(file, regs::kRegDoorbell, 1);
  } else {
    WriteReg<uint32_t>(file, regs::kRegQueueTail, filled);
    WriteReg<uint32_t>(file, regs::kRegDoorbell, 1);
  }
  for (int i = 0; i < 2000; ++i) {
    if (ReadReg(file, regs::kRegQueueHead) == filled || ReadReg(file, regs::kRegErrorCode) != 0) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  WriteReg<uint32_t>(file, regs::kRegReset, 1);
  return 0;  // Closing the file unmaps the guest memory.
}
