// VulkanContext: one generation of the Vulkan engine's device objects (an
// instance, the logical device, its compute queue, command pool and fence).
// A runaway or lost submission abandons its generation and the engine makes
// a fresh one; slices move their memory over lazily.
#pragma once

#include <vulkan/vulkan.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "vulkan_util.h"

namespace umdev::vendor::gpu {

// Read-only once created, except |abandoned|. Thread-safe for the Vulkan
// calls that allow it; the queue, pool and fence belong to whoever holds the
// engine's queue mutex.
struct VulkanContext {
  VulkanContext() = default;
  VulkanContext(const VulkanContext&) = delete;
  VulkanContext& operator=(const VulkanContext&) = delete;
  // Waits for the device and destroys it. Never runs for an abandoned
  // generation: those are kept alive by KeepForever (work may be pending).
  ~VulkanContext();

  VulkanInstance instance;
  VkPhysicalDevice physical = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;
  VkCommandPool pool = VK_NULL_HANDLE;
  VkFence fence = VK_NULL_HANDLE;
  uint32_t memory_type = 0;
  // VK_EXT_external_memory_host: slices import memfd mappings.
  bool host_import = false;
  uint64_t import_alignment = 0;
  PFN_vkGetMemoryHostPointerPropertiesEXT get_host_pointer_properties = nullptr;
  VkPhysicalDeviceLimits limits{};
  // min(device, instance) API version: what the SPIR-V validator targets.
  uint32_t api_version = 0;
  std::array<uint8_t, VK_UUID_SIZE> device_uuid{};
  std::string name;
  uint64_t heap_size = 0;
  // Set when the engine gave this generation up: objects made on it are
  // leaked rather than destroyed, since the device may still be running a
  // submission that uses them.
  std::atomic<bool> abandoned{false};

  // Keeps an object of this (abandoned) generation referenced for good, so
  // leak checkers see it as reachable. Thread-safe.
  template <typename Handle>
  void Keep(Handle handle) const {
    if (handle != VK_NULL_HANDLE) KeepPointer(reinterpret_cast<void*>(handle));
  }

 private:
  void KeepPointer(void* object) const;

  mutable Mutex kept_mu_;
  mutable std::vector<void*> kept_ UMDEV_GUARDED_BY(kept_mu_);
};

// A fresh instance and device for the loader's device |device_index|; when
// |uuid| is given the device must have that deviceUUID (the loader's order
// may change between instances), else ENODEV.
Result<std::shared_ptr<VulkanContext>> CreateVulkanContext(
    uint32_t device_index, const std::optional<std::array<uint8_t, VK_UUID_SIZE>>& uuid);

// Keeps |object| alive until the process exits, reachable (so leak checkers
// stay quiet): for device generations and memory a wedged kernel may still
// be using. Thread-safe.
void KeepForever(std::shared_ptr<void> object);

}  // namespace umdev::vendor::gpu
