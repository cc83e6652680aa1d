#include "vulkan_context.h"

#include <algorithm>
#include <cerrno>
#include <vector>

#include <fmt/format.h>

#include "umdev/common/mutex.h"

namespace umdev::vendor::gpu {
namespace {

// Device-local host-visible memory first (llvmpipe, resizable-BAR GPUs), then
// any host-visible coherent type: the daemon needs a host pointer for guest
// copies and to back BAR2.
Result<uint32_t> PickMemoryType(VkPhysicalDevice physical, uint64_t& heap_size) {
  VkPhysicalDeviceMemoryProperties memory{};
  vkGetPhysicalDeviceMemoryProperties(physical, &memory);
  const VkMemoryPropertyFlags host =
      VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  for (const VkMemoryPropertyFlags wanted : {host | VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, host}) {
    for (uint32_t i = 0; i < memory.memoryTypeCount; ++i) {
      if ((memory.memoryTypes[i].propertyFlags & wanted) == wanted) {
        heap_size = memory.memoryHeaps[memory.memoryTypes[i].heapIndex].size;
        return i;
      }
    }
  }
  return Fail(ENOTSUP, "device has no host-visible coherent memory type");
}

Result<VkPhysicalDevice> PickPhysicalDevice(
    VkInstance instance, uint32_t device_index,
    const std::optional<std::array<uint8_t, VK_UUID_SIZE>>& uuid) {
  UMDEV_ASSIGN_OR_RETURN(auto devices, EnumeratePhysicalDevices(instance));
  if (!uuid) {
    if (device_index >= devices.size()) {
      return Fail(ENODEV, fmt::format("no Vulkan device {} ({} present)", device_index,
                                      devices.size()));
    }
    return devices[device_index];
  }
  for (VkPhysicalDevice physical : devices) {
    VkPhysicalDeviceIDProperties id{};
    id.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES;
    VkPhysicalDeviceProperties2 properties{};
    properties.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
    properties.pNext = &id;
    vkGetPhysicalDeviceProperties2(physical, &properties);
    if (std::equal(uuid->begin(), uuid->end(), id.deviceUUID)) return physical;
  }
  return Fail(ENODEV, "the Vulkan device is gone (no device with its UUID)");
}

}  // namespace

VulkanContext::~VulkanContext() {
  if (device == VK_NULL_HANDLE) return;
  vkDeviceWaitIdle(device);
  if (fence != VK_NULL_HANDLE) vkDestroyFence(device, fence, nullptr);
  if (pool != VK_NULL_HANDLE) vkDestroyCommandPool(device, pool, nullptr);
  vkDestroyDevice(device, nullptr);
}

Result<std::shared_ptr<VulkanContext>> CreateVulkanContext(
    uint32_t device_index, const std::optional<std::array<uint8_t, VK_UUID_SIZE>>& uuid) {
  auto ctx = std::make_shared<VulkanContext>();
  UMDEV_ASSIGN_OR_RETURN(ctx->instance, CreateComputeInstance());
  if (!ctx->instance.valid()) return Fail(ENODEV, "no Vulkan driver installed");
  UMDEV_ASSIGN_OR_RETURN(ctx->physical,
                         PickPhysicalDevice(ctx->instance.get(), device_index, uuid));

  VkPhysicalDeviceIDProperties id{};
  id.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES;
  VkPhysicalDeviceProperties2 properties{};
  properties.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
  properties.pNext = &id;
  vkGetPhysicalDeviceProperties2(ctx->physical, &properties);
  ctx->name = properties.properties.deviceName;
  ctx->limits = properties.properties.limits;
  ctx->api_version = std::min(properties.properties.apiVersion, kInstanceApiVersion);
  std::copy(std::begin(id.deviceUUID), std::end(id.deviceUUID), ctx->device_uuid.begin());

  uint32_t family_count = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(ctx->physical, &family_count, nullptr);
  std::vector<VkQueueFamilyProperties> families(family_count);
  vkGetPhysicalDeviceQueueFamilyProperties(ctx->physical, &family_count, families.data());
  const auto family = std::find_if(families.begin(), families.end(), [](const auto& f) {
    return (f.queueFlags & VK_QUEUE_COMPUTE_BIT) != 0 && f.queueCount > 0;
  });
  if (family == families.end()) {
    return Fail(ENODEV, fmt::format("{} has no compute queue", ctx->name));
  }
  const uint32_t family_index = static_cast<uint32_t>(family - families.begin());

  UMDEV_ASSIGN_OR_RETURN(ctx->memory_type, PickMemoryType(ctx->physical, ctx->heap_size));

  // Robust buffer access keeps a kernel's stray index inside its own binding,
  // which is what keeps one slice out of another's memory on the device.
  VkPhysicalDeviceFeatures supported{};
  vkGetPhysicalDeviceFeatures(ctx->physical, &supported);
  if (supported.robustBufferAccess != VK_TRUE) {
    return Fail(ENOTSUP, fmt::format("{} lacks robustBufferAccess", ctx->name));
  }
  VkPhysicalDeviceFeatures enabled{};
  enabled.robustBufferAccess = VK_TRUE;

  const float priority = 1.0f;
  VkDeviceQueueCreateInfo queue_info{};
  queue_info.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
  queue_info.queueFamilyIndex = family_index;
  queue_info.queueCount = 1;
  queue_info.pQueuePriorities = &priority;
  std::vector<const char*> extensions;
  ctx->import_alignment = HostImportAlignment(ctx->physical);
  if (ctx->import_alignment != 0) extensions.push_back(VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);

  VkDeviceCreateInfo device_info{};
  device_info.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
  device_info.queueCreateInfoCount = 1;
  device_info.pQueueCreateInfos = &queue_info;
  device_info.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
  device_info.ppEnabledExtensionNames = extensions.data();
  device_info.pEnabledFeatures = &enabled;
  if (VkResult r = vkCreateDevice(ctx->physical, &device_info, nullptr, &ctx->device);
      r != VK_SUCCESS) {
    return VkFail(r, "vkCreateDevice");
  }
  vkGetDeviceQueue(ctx->device, family_index, 0, &ctx->queue);
  if (!extensions.empty()) {
    ctx->get_host_pointer_properties = reinterpret_cast<PFN_vkGetMemoryHostPointerPropertiesEXT>(
        vkGetDeviceProcAddr(ctx->device, "vkGetMemoryHostPointerPropertiesEXT"));
    ctx->host_import = ctx->get_host_pointer_properties != nullptr;
  }

  VkCommandPoolCreateInfo pool_info{};
  pool_info.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
  pool_info.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pool_info.queueFamilyIndex = family_index;
  if (VkResult r = vkCreateCommandPool(ctx->device, &pool_info, nullptr, &ctx->pool);
      r != VK_SUCCESS) {
    return VkFail(r, "vkCreateCommandPool");
  }
  VkFenceCreateInfo fence_info{};
  fence_info.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
  if (VkResult r = vkCreateFence(ctx->device, &fence_info, nullptr, &ctx->fence);
      r != VK_SUCCESS) {
    return VkFail(r, "vkCreateFence");
  }
  return ctx;
}

void VulkanContext::KeepPointer(void* object) const {
  MutexLock lock(kept_mu_);
  kept_.push_back(object);
}

void KeepForever(std::shared_ptr<void> object) {
  // Both deliberately never destroyed: exit must not run destructors that
  // would wait for a device that never idles.
  static Mutex* const mu = new Mutex;
  static auto* const kept = new std::vector<std::shared_ptr<void>>;
  MutexLock lock(*mu);
  kept->push_back(std::move(object));
}

}  // namespace umdev::vendor::gpu
