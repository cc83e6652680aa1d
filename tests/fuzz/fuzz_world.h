// What the stateful fuzz targets stand up once: quiet logs, a registry whose
// containers use the real type1 backend, and a gpu parent on the CPU engine.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <memory>

#include "umdev/mdev_core/registry.h"
#include "umdev/pinning/type1_driver.h"
#include "umdev/vendor/gpu/gpu_parent.h"

namespace umdev::fuzz {

// A registry with the type1 backend (64 MiB of locked memory) and no parent.
inline void PrepareRegistry(Registry& registry) {
  spdlog::set_level(spdlog::level::off);  // Millions of refusals are not news.
  auto account = std::make_shared<pinning::LockedMemoryAccount>(64ull << 20);
  registry.iommu_drivers().Register(std::make_shared<pinning::Type1Driver>(account)).value();
}

// Registers "gpu0": the CPU engine over |memory| bytes.
inline void RegisterCpuGpu(Registry& registry, uint64_t memory = uint64_t{16} << 20) {
  registry
      .RegisterParent(vendor::gpu::GpuParent::Create(
                          {.parent_name = "gpu0", .engine = vendor::gpu::EngineKind::kCpu,
                           .memory = memory})
                          .value())
      .value();
}

}  // namespace umdev::fuzz
