// Vulkan plumbing shared by discovery and the Vulkan engine: VkResult to
// errno, and an owned VkInstance.
#pragma once

#include <vulkan/vulkan.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "umdev/common/error.h"

namespace umdev::vendor::gpu {

// ENOMEM for out-of-memory results, EIO for a lost device, ENODEV for no
// driver, ENOTSUP for a missing feature or extension, EIO otherwise.
int VkResultErrno(VkResult result);
std::string_view VkResultName(VkResult result);
std::unexpected<Error> VkFail(VkResult result, std::string_view what);

// Owns a VkInstance; move-only. Thread-safe once created.
class VulkanInstance {
 public:
  VulkanInstance() = default;
  explicit VulkanInstance(VkInstance instance) : instance_(instance) {}
  VulkanInstance(VulkanInstance&& other) noexcept
      : instance_(std::exchange(other.instance_, VK_NULL_HANDLE)) {}
  VulkanInstance& operator=(VulkanInstance&& other) noexcept;
  VulkanInstance(const VulkanInstance&) = delete;
  VulkanInstance& operator=(const VulkanInstance&) = delete;
  ~VulkanInstance();

  VkInstance get() const { return instance_; }
  bool valid() const { return instance_ != VK_NULL_HANDLE; }

 private:
  VkInstance instance_ = VK_NULL_HANDLE;
};

// The API version instances ask for; a device's usable version is the
// smaller of this and its own.
inline constexpr uint32_t kInstanceApiVersion = VK_API_VERSION_1_1;

// A Vulkan 1.1 instance for compute (no surfaces, no layers). When the loader
// finds no driver the result holds an invalid instance rather than an error,
// so callers can treat "no Vulkan" as "no devices".
Result<VulkanInstance> CreateComputeInstance();

Result<std::vector<VkPhysicalDevice>> EnumeratePhysicalDevices(VkInstance instance);

bool HasDeviceExtension(VkPhysicalDevice device, std::string_view name);

// VK_EXT_external_memory_host's minImportedHostPointerAlignment, or 0 when
// the device does not have the extension.
uint64_t HostImportAlignment(VkPhysicalDevice device);

// The first memory type allowed by |type_bits| that has every flag of
// |wanted|; UINT32_MAX when none does.
uint32_t FindMemoryType(VkPhysicalDevice device, uint32_t type_bits,
                        VkMemoryPropertyFlags wanted);

}  // namespace umdev::vendor::gpu
