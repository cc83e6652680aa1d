// DiscoverAccelerators: Vulkan physical devices, enriched from libdrm.

#include <fcntl.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <vulkan/vulkan.h>
#include <xf86drm.h>

#include <optional>

#include <fmt/format.h>

#include "umdev/vendor/gpu/accelerator.h"
#include "vulkan_util.h"

namespace umdev::vendor::gpu {
namespace {

std::string PciAddress(uint32_t domain, uint32_t bus, uint32_t device, uint32_t function) {
  return fmt::format("{:04x}:{:02x}:{:02x}.{:x}", domain, bus, device, function);
}

// The kernel driver behind a DRM node ("amdgpu"), or "" when it cannot be
// opened (permissions: discovery must not fail over a missing detail).
std::string DrmDriverName(const char* node) {
  const int fd = ::open(node, O_RDWR | O_CLOEXEC);
  if (fd < 0) return "";
  std::string name;
  if (drmVersionPtr version = drmGetVersion(fd); version != nullptr) {
    name.assign(version->name, static_cast<size_t>(version->name_len));
    drmFreeVersion(version);
  }
  ::close(fd);
  return name;
}

void FillFromDrmDevice(drmDevicePtr drm, Accelerator& out) {
  if ((drm->available_nodes & (1 << DRM_NODE_RENDER)) != 0) {
    out.render_node = drm->nodes[DRM_NODE_RENDER];
    out.drm_driver = DrmDriverName(drm->nodes[DRM_NODE_RENDER]);
  }
  if (drm->bustype == DRM_BUS_PCI && out.pci_address.empty()) {
    const drmPciBusInfo& pci = *drm->businfo.pci;
    out.pci_address = PciAddress(pci.domain, pci.bus, pci.dev, pci.func);
  }
}

// Finds the DRM device either by the render node Vulkan names
// (VK_EXT_physical_device_drm) or by the PCI address (VK_EXT_pci_bus_info).
void EnrichFromDrm(std::optional<dev_t> render_node, Accelerator& out) {
  if (render_node) {
    drmDevicePtr drm = nullptr;
    if (drmGetDeviceFromDevId(*render_node, 0, &drm) == 0) {
      FillFromDrmDevice(drm, out);
      drmFreeDevice(&drm);
      return;
    }
  }
  if (out.pci_address.empty()) return;
  drmDevicePtr devices[64];
  const int count = drmGetDevices2(0, devices, 64);
  for (int i = 0; i < count; ++i) {
    drmDevicePtr drm = devices[i];
    if (drm->bustype == DRM_BUS_PCI && out.render_node.empty()) {
      const drmPciBusInfo& pci = *drm->businfo.pci;
      if (PciAddress(pci.domain, pci.bus, pci.dev, pci.func) == out.pci_address) {
        FillFromDrmDevice(drm, out);
      }
    }
  }
  if (count > 0) drmFreeDevices(devices, count);
}

Accelerator Describe(uint32_t index, VkPhysicalDevice device) {
  Accelerator out;
  out.index = index;

  const bool has_pci = HasDeviceExtension(device, VK_EXT_PCI_BUS_INFO_EXTENSION_NAME);
  const bool has_drm = HasDeviceExtension(device, VK_EXT_PHYSICAL_DEVICE_DRM_EXTENSION_NAME);
  VkPhysicalDevicePCIBusInfoPropertiesEXT pci{};
  pci.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PCI_BUS_INFO_PROPERTIES_EXT;
  VkPhysicalDeviceDrmPropertiesEXT drm{};
  drm.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRM_PROPERTIES_EXT;
  VkPhysicalDeviceProperties2 properties{};
  properties.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
  void** next = &properties.pNext;
  if (has_pci) {
    *next = &pci;
    next = &pci.pNext;
  }
  if (has_drm) *next = &drm;
  vkGetPhysicalDeviceProperties2(device, &properties);

  const VkPhysicalDeviceProperties& p = properties.properties;
  out.name = p.deviceName;
  out.type = PhysicalDeviceTypeName(p.deviceType);
  out.vendor_id = p.vendorID;
  out.device_id = p.deviceID;
  out.api_version = p.apiVersion;
  if (has_pci) out.pci_address = PciAddress(pci.pciDomain, pci.pciBus, pci.pciDevice, pci.pciFunction);

  uint32_t family_count = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(device, &family_count, nullptr);
  std::vector<VkQueueFamilyProperties> families(family_count);
  vkGetPhysicalDeviceQueueFamilyProperties(device, &family_count, families.data());
  for (uint32_t i = 0; i < family_count; ++i) {
    if ((families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) != 0 && families[i].queueCount > 0) {
      out.compute_queue_families.push_back(i);
    }
  }

  VkPhysicalDeviceMemoryProperties memory{};
  vkGetPhysicalDeviceMemoryProperties(device, &memory);
  for (uint32_t i = 0; i < memory.memoryHeapCount; ++i) {
    out.heaps.push_back(MemoryHeap{
        .size = memory.memoryHeaps[i].size,
        .device_local = (memory.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) != 0});
  }

  std::optional<dev_t> render_node;
  if (has_drm && drm.hasRender == VK_TRUE) {
    render_node = makedev(static_cast<unsigned>(drm.renderMajor),
                          static_cast<unsigned>(drm.renderMinor));
  }
  EnrichFromDrm(render_node, out);
  return out;
}

}  // namespace

std::string PhysicalDeviceTypeName(int vk_physical_device_type) {
  switch (vk_physical_device_type) {
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
  }
}

Result<std::vector<Accelerator>> DiscoverAccelerators() {
  UMDEV_ASSIGN_OR_RETURN(VulkanInstance instance, CreateComputeInstance());
  std::vector<Accelerator> out;
  if (!instance.valid()) return out;
  UMDEV_ASSIGN_OR_RETURN(auto devices, EnumeratePhysicalDevices(instance.get()));
  for (uint32_t i = 0; i < devices.size(); ++i) {
    Accelerator accelerator = Describe(i, devices[i]);
    if (!accelerator.compute_queue_families.empty()) out.push_back(std::move(accelerator));
  }
  return out;
}

}  // namespace umdev::vendor::gpu
