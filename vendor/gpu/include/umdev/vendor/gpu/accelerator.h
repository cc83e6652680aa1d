// Accelerator discovery: the compute devices the Vulkan loader offers, with
// the PCI address and kernel driver libdrm reports for their render nodes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "umdev/common/error.h"

namespace umdev::vendor::gpu {

struct MemoryHeap {
  uint64_t size = 0;
  bool device_local = false;
};

// What a parent is built from. Plain data; copy freely.
struct Accelerator {
  uint32_t index = 0;  // the loader's device order; VulkanEngineOptions::device_index
  std::string name;    // VkPhysicalDeviceProperties::deviceName
  std::string type;    // "discrete-gpu", "integrated-gpu", "virtual-gpu", "cpu", "other"
  uint32_t vendor_id = 0;
  uint32_t device_id = 0;
  uint32_t api_version = 0;  // VK_MAKE_API_VERSION encoding
  std::vector<uint32_t> compute_queue_families;
  std::vector<MemoryHeap> heaps;
  // From VK_EXT_pci_bus_info or the DRM render node; empty when neither
  // exists (llvmpipe has none).
  std::string pci_address;  // "0000:01:00.0"
  std::string render_node;  // "/dev/dri/renderD128"
  std::string drm_driver;   // "amdgpu", "i915", "nvidia-drm", ...
};

// Every physical device with at least one compute queue family. A host with
// no Vulkan driver (no ICD, or vkCreateInstance reports no compatible driver)
// has none: an empty list, not an error. Other loader failures: EIO.
Result<std::vector<Accelerator>> DiscoverAccelerators();

// "cpu" for VK_PHYSICAL_DEVICE_TYPE_CPU and so on.
std::string PhysicalDeviceTypeName(int vk_physical_device_type);

}  // namespace umdev::vendor::gpu
