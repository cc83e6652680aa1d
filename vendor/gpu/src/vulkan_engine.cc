// VulkanEngine: slices are VkDeviceMemory allocations on one physical device;
// COPY, FILL and DISPATCH are recorded into command buffers and run on its
// compute queue, one submission at a time.

#include <vulkan/vulkan.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>

#include <fmt/format.h>

#include "shared_memory.h"
#include "slice_bounds.h"
#include "umdev/common/mutex.h"
#include "umdev/common/scope_exit.h"
#include "umdev/vendor/gpu/engine.h"
#include "vulkan_util.h"

namespace umdev::vendor::gpu {
namespace {

// The logical device, its compute queue and the capacity account, shared by
// the engine and its slices. Thread-safe: queue_mu_ serialises the queue and
// the command pool (Vulkan requires both externally synchronised).
class VulkanDevice {
 public:
  VulkanDevice() = default;
  VulkanDevice(const VulkanDevice&) = delete;
  VulkanDevice& operator=(const VulkanDevice&) = delete;
  ~VulkanDevice() {
    if (device != VK_NULL_HANDLE) {
      vkDeviceWaitIdle(device);
      if (fence != VK_NULL_HANDLE) vkDestroyFence(device, fence, nullptr);
      if (pool != VK_NULL_HANDLE) vkDestroyCommandPool(device, pool, nullptr);
      vkDestroyDevice(device, nullptr);
    }
  }

  // Records through |record| into a fresh command buffer, submits it and
  // waits for it. Full memory barriers before and after make the previous
  // submission's writes visible to this one and this one's to the host.
  Result<void> Submit(const std::function<void(VkCommandBuffer)>& record) {
    MutexLock lock(queue_mu_);
    VkCommandBufferAllocateInfo alloc{};
    alloc.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
    alloc.commandPool = pool;
    alloc.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    alloc.commandBufferCount = 1;
    VkCommandBuffer cmd = VK_NULL_HANDLE;
    if (VkResult r = vkAllocateCommandBuffers(device, &alloc, &cmd); r != VK_SUCCESS) {
      return VkFail(r, "vkAllocateCommandBuffers");
    }
    ScopeExit free_cmd([&] { vkFreeCommandBuffers(device, pool, 1, &cmd); });
    VkCommandBufferBeginInfo begin{};
    begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
    begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    if (VkResult r = vkBeginCommandBuffer(cmd, &begin); r != VK_SUCCESS) {
      return VkFail(r, "vkBeginCommandBuffer");
    }
    Barrier(cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
            VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT);
    record(cmd);
    Barrier(cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_PIPELINE_STAGE_HOST_BIT,
            VK_ACCESS_HOST_READ_BIT | VK_ACCESS_HOST_WRITE_BIT);
    if (VkResult r = vkEndCommandBuffer(cmd); r != VK_SUCCESS) {
      return VkFail(r, "vkEndCommandBuffer");
    }
    if (VkResult r = vkResetFences(device, 1, &fence); r != VK_SUCCESS) {
      return VkFail(r, "vkResetFences");
    }
    VkSubmitInfo submit{};
    submit.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
    submit.commandBufferCount = 1;
    submit.pCommandBuffers = &cmd;
    if (VkResult r = vkQueueSubmit(queue, 1, &submit, fence); r != VK_SUCCESS) {
      return VkFail(r, "vkQueueSubmit");
    }
    // No timeout yet: a kernel that never ends holds the queue (docs/gpu.md).
    if (VkResult r = vkWaitForFences(device, 1, &fence, VK_TRUE, UINT64_MAX); r != VK_SUCCESS) {
      return VkFail(r, "vkWaitForFences");
    }
    return {};
  }

  Result<void> Take(uint64_t size) {
    MutexLock lock(account_mu_);
    if (size > capacity - allocated_) {
      return Fail(ENOSPC, fmt::format("slice of {:#x} bytes: only {:#x} of {:#x} left", size,
                                      capacity - allocated_, capacity));
    }
    allocated_ += size;
    return {};
  }
  void Give(uint64_t size) {
    MutexLock lock(account_mu_);
    allocated_ -= size;
  }
  uint64_t allocated() {
    MutexLock lock(account_mu_);
    return allocated_;
  }

  // Set once by CreateVulkanEngine, read-only afterwards.
  VulkanInstance instance;
  VkPhysicalDevice physical = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;
  VkCommandPool pool = VK_NULL_HANDLE;
  VkFence fence = VK_NULL_HANDLE;
  uint32_t memory_type = 0;
  // VK_EXT_external_memory_host: slices import memfd mappings (memory_fd()).
  bool host_import = false;
  uint64_t import_alignment = 0;
  PFN_vkGetMemoryHostPointerPropertiesEXT get_host_pointer_properties = nullptr;
  VkPhysicalDeviceLimits limits{};
  std::string name;
  uint64_t capacity = 0;

 private:
  static void Barrier(VkCommandBuffer cmd, VkPipelineStageFlags src, VkPipelineStageFlags dst,
                      VkAccessFlags dst_access) {
    VkMemoryBarrier barrier{};
    barrier.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
    barrier.srcAccessMask = VK_ACCESS_MEMORY_WRITE_BIT;
    barrier.dstAccessMask = dst_access;
    vkCmdPipelineBarrier(cmd, src, dst, 0, 1, &barrier, 0, nullptr, 0, nullptr);
  }

  Mutex queue_mu_;
  Mutex account_mu_;
  uint64_t allocated_ UMDEV_GUARDED_BY(account_mu_) = 0;
};

// Per-dispatch Vulkan objects, destroyed in reverse order of creation.
struct DispatchObjects {
  VkDevice device = VK_NULL_HANDLE;
  VkShaderModule module = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
  VkPipelineLayout pipeline_layout = VK_NULL_HANDLE;
  VkPipeline pipeline = VK_NULL_HANDLE;
  VkDescriptorPool descriptor_pool = VK_NULL_HANDLE;
  ~DispatchObjects() {
    if (descriptor_pool != VK_NULL_HANDLE) vkDestroyDescriptorPool(device, descriptor_pool, nullptr);
    if (pipeline != VK_NULL_HANDLE) vkDestroyPipeline(device, pipeline, nullptr);
    if (pipeline_layout != VK_NULL_HANDLE) vkDestroyPipelineLayout(device, pipeline_layout, nullptr);
    if (set_layout != VK_NULL_HANDLE) vkDestroyDescriptorSetLayout(device, set_layout, nullptr);
    if (module != VK_NULL_HANDLE) vkDestroyShaderModule(device, module, nullptr);
  }
};

// Thread-compatible (see Slice).
class VulkanSlice final : public Slice {
 public:
  VulkanSlice(std::shared_ptr<VulkanDevice> device, uint64_t size)
      : dev_(std::move(device)), size_(size) {}
  ~VulkanSlice() override {
    Release();
    dev_->Give(size_);
  }

  // One buffer over the whole slice, its memory reachable from the host,
  // zeroed. Imports a memfd mapping where the driver can, so the memory can
  // be shared with a client; otherwise (or when the import fails) allocates
  // device memory and maps it.
  Result<void> Init() {
    if (dev_->host_import) {
      if (InitImported().has_value()) return {};
      Release();
    }
    UMDEV_TRY(CreateBuffer(false));
    VkMemoryRequirements req{};
    vkGetBufferMemoryRequirements(dev_->device, buffer_, &req);
    if ((req.memoryTypeBits & (1u << dev_->memory_type)) == 0) {
      return Fail(ENOTSUP, "slice buffer cannot live in the host-visible memory type");
    }
    VkMemoryAllocateInfo alloc{};
    alloc.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
    alloc.allocationSize = req.size;
    alloc.memoryTypeIndex = dev_->memory_type;
    if (VkResult r = vkAllocateMemory(dev_->device, &alloc, nullptr, &memory_); r != VK_SUCCESS) {
      return VkFail(r, "vkAllocateMemory");
    }
    if (VkResult r = vkBindBufferMemory(dev_->device, buffer_, memory_, 0); r != VK_SUCCESS) {
      return VkFail(r, "vkBindBufferMemory");
    }
    if (VkResult r = vkMapMemory(dev_->device, memory_, 0, VK_WHOLE_SIZE, 0, &mapped_);
        r != VK_SUCCESS) {
      return VkFail(r, "vkMapMemory");
    }
    // Fresh allocations may hold a previous tenant's data: zero on the device.
    return dev_->Submit([&](VkCommandBuffer cmd) {
      vkCmdFillBuffer(cmd, buffer_, 0, VK_WHOLE_SIZE, 0);
    });
  }

  uint64_t size() const override { return size_; }
  int memory_fd() const override { return shared_.fd ? shared_.fd.get() : -1; }

  Result<void> Write(uint64_t offset, std::span<const std::byte> data) override {
    UMDEV_TRY(CheckRange(size_, offset, data.size(), "write"));
    if (!data.empty()) std::memcpy(Host() + offset, data.data(), data.size());
    return {};
  }

  Result<void> Read(uint64_t offset, std::span<std::byte> out) override {
    UMDEV_TRY(CheckRange(size_, offset, out.size(), "read"));
    if (!out.empty()) std::memcpy(out.data(), Host() + offset, out.size());
    return {};
  }

  Result<void> Copy(uint64_t dst, uint64_t src, uint64_t bytes) override {
    UMDEV_TRY(CheckCopy(size_, dst, src, bytes));
    return dev_->Submit([&](VkCommandBuffer cmd) {
      const VkBufferCopy region{.srcOffset = src, .dstOffset = dst, .size = bytes};
      vkCmdCopyBuffer(cmd, buffer_, buffer_, 1, &region);
    });
  }

  Result<void> Fill(uint64_t offset, uint64_t bytes, uint32_t pattern) override {
    UMDEV_TRY(CheckFill(size_, offset, bytes));
    return dev_->Submit([&](VkCommandBuffer cmd) {
      vkCmdFillBuffer(cmd, buffer_, offset, bytes, pattern);
    });
  }

  Result<void> Dispatch(const DispatchCommand& command) override;

 private:
  std::byte* Host() const {
    return shared_.mapping.valid() ? shared_.mapping.data() : static_cast<std::byte*>(mapped_);
  }
  Result<void> CheckDeviceLimits(const DispatchCommand& command) const;
  Result<void> CreateBuffer(bool external_host);
  Result<void> InitImported();
  // Frees the Vulkan objects before the memory they may point into.
  void Release() {
    if (mapped_ != nullptr) vkUnmapMemory(dev_->device, memory_);
    if (buffer_ != VK_NULL_HANDLE) vkDestroyBuffer(dev_->device, buffer_, nullptr);
    if (memory_ != VK_NULL_HANDLE) vkFreeMemory(dev_->device, memory_, nullptr);
    mapped_ = nullptr;
    buffer_ = VK_NULL_HANDLE;
    memory_ = VK_NULL_HANDLE;
    shared_ = SharedMemory{};
  }

  std::shared_ptr<VulkanDevice> dev_;
  const uint64_t size_;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  void* mapped_ = nullptr;     // vkMapMemory's pointer (allocated memory)
  SharedMemory shared_;        // the memfd (imported memory)
};

Result<void> VulkanSlice::CreateBuffer(bool external_host) {
  VkExternalMemoryBufferCreateInfo external{};
  external.sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO;
  external.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
  VkBufferCreateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
  info.pNext = external_host ? &external : nullptr;
  info.size = size_;
  info.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
               VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  if (VkResult r = vkCreateBuffer(dev_->device, &info, nullptr, &buffer_); r != VK_SUCCESS) {
    return VkFail(r, "vkCreateBuffer");
  }
  return {};
}

Result<void> VulkanSlice::InitImported() {
  UMDEV_TRY(CreateBuffer(true));
  VkMemoryRequirements req{};
  vkGetBufferMemoryRequirements(dev_->device, buffer_, &req);
  const uint64_t align = std::max<uint64_t>(dev_->import_alignment, req.alignment);
  const uint64_t bytes = (std::max<uint64_t>(req.size, size_) + align - 1) / align * align;
  // A fresh memfd is zero-filled: no previous tenant's data to clear.
  UMDEV_ASSIGN_OR_RETURN(shared_, CreateSharedMemory("umdev-gpu-slice", bytes));

  VkMemoryHostPointerPropertiesEXT pointer{};
  pointer.sType = VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT;
  if (VkResult r = dev_->get_host_pointer_properties(
          dev_->device, VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT,
          shared_.mapping.data(), &pointer);
      r != VK_SUCCESS) {
    return VkFail(r, "vkGetMemoryHostPointerPropertiesEXT");
  }
  // Host-coherent, so host access through the mapping needs no flushes.
  const uint32_t type = FindMemoryType(
      dev_->physical, pointer.memoryTypeBits & req.memoryTypeBits,
      VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
  if (type == UINT32_MAX) return Fail(ENOTSUP, "no coherent memory type imports host memory");
  VkImportMemoryHostPointerInfoEXT import{};
  import.sType = VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT;
  import.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
  import.pHostPointer = shared_.mapping.data();
  VkMemoryAllocateInfo alloc{};
  alloc.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
  alloc.pNext = &import;
  alloc.allocationSize = bytes;
  alloc.memoryTypeIndex = type;
  if (VkResult r = vkAllocateMemory(dev_->device, &alloc, nullptr, &memory_); r != VK_SUCCESS) {
    return VkFail(r, "vkAllocateMemory (host import)");
  }
  if (VkResult r = vkBindBufferMemory(dev_->device, buffer_, memory_, 0); r != VK_SUCCESS) {
    return VkFail(r, "vkBindBufferMemory");
  }
  return {};
}

Result<void> VulkanSlice::CheckDeviceLimits(const DispatchCommand& command) const {
  const VkPhysicalDeviceLimits& limits = dev_->limits;
  if (command.groups_x > limits.maxComputeWorkGroupCount[0] ||
      command.groups_y > limits.maxComputeWorkGroupCount[1] ||
      command.groups_z > limits.maxComputeWorkGroupCount[2]) {
    return Fail(EINVAL, fmt::format("dispatch of {}x{}x{} groups exceeds the device's {}x{}x{}",
                                    command.groups_x, command.groups_y, command.groups_z,
                                    limits.maxComputeWorkGroupCount[0],
                                    limits.maxComputeWorkGroupCount[1],
                                    limits.maxComputeWorkGroupCount[2]));
  }
  if (command.push_constants.size() > limits.maxPushConstantsSize) {
    return Fail(EINVAL, "push constants exceed the device's maxPushConstantsSize");
  }
  for (const BufferBinding& b : command.bindings) {
    if (b.offset % limits.minStorageBufferOffsetAlignment != 0) {
      return Fail(EINVAL, fmt::format("binding {} offset {:#x} is not a multiple of the "
                                      "device's storage buffer alignment {:#x}",
                                      b.binding, b.offset,
                                      limits.minStorageBufferOffsetAlignment));
    }
    if (b.size > limits.maxStorageBufferRange) {
      return Fail(EINVAL, fmt::format("binding {} of {:#x} bytes exceeds the device's "
                                      "maxStorageBufferRange {:#x}",
                                      b.binding, b.size, limits.maxStorageBufferRange));
    }
  }
  return {};
}

Result<void> VulkanSlice::Dispatch(const DispatchCommand& command) {
  UMDEV_TRY(CheckDispatch(size_, command));
  UMDEV_TRY(CheckDeviceLimits(command));
  // The driver's compiler trusts its input: refuse modules whose entry point
  // or descriptor interface does not match what the command provides.
  UMDEV_ASSIGN_OR_RETURN(const SpirvInterface iface,
                         InspectSpirv(command.spirv, command.entry_point));
  if (!iface.has_entry_point) {
    return Fail(EINVAL, fmt::format("SPIR-V module has no GLCompute entry point '{}'",
                                    command.entry_point));
  }
  uint32_t provided = 0;
  for (const BufferBinding& b : command.bindings) provided |= 1u << b.binding;
  if (iface.max_descriptor_set != 0 || iface.binding_out_of_range ||
      (iface.binding_mask & ~provided) != 0) {
    return Fail(EINVAL, "SPIR-V module uses descriptors the dispatch does not bind "
                        "(only set 0 and the given bindings are available)");
  }

  VkDevice device = dev_->device;
  DispatchObjects objects;
  objects.device = device;

  VkShaderModuleCreateInfo module_info{};
  module_info.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
  module_info.codeSize = command.spirv.size_bytes();
  module_info.pCode = command.spirv.data();
  if (VkResult r = vkCreateShaderModule(device, &module_info, nullptr, &objects.module);
      r != VK_SUCCESS) {
    return Fail(r == VK_ERROR_OUT_OF_HOST_MEMORY ? ENOMEM : EINVAL, "vkCreateShaderModule");
  }

  std::vector<VkDescriptorSetLayoutBinding> layout_bindings;
  for (const BufferBinding& b : command.bindings) {
    layout_bindings.push_back(VkDescriptorSetLayoutBinding{
        .binding = b.binding,
        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
        .descriptorCount = 1,
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        .pImmutableSamplers = nullptr});
  }
  VkDescriptorSetLayoutCreateInfo set_info{};
  set_info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
  set_info.bindingCount = static_cast<uint32_t>(layout_bindings.size());
  set_info.pBindings = layout_bindings.data();
  if (VkResult r = vkCreateDescriptorSetLayout(device, &set_info, nullptr, &objects.set_layout);
      r != VK_SUCCESS) {
    return VkFail(r, "vkCreateDescriptorSetLayout");
  }

  const VkPushConstantRange push_range{.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
                                       .offset = 0,
                                       .size = static_cast<uint32_t>(command.push_constants.size())};
  VkPipelineLayoutCreateInfo layout_info{};
  layout_info.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
  layout_info.setLayoutCount = 1;
  layout_info.pSetLayouts = &objects.set_layout;
  layout_info.pushConstantRangeCount = command.push_constants.empty() ? 0 : 1;
  layout_info.pPushConstantRanges = &push_range;
  if (VkResult r = vkCreatePipelineLayout(device, &layout_info, nullptr, &objects.pipeline_layout);
      r != VK_SUCCESS) {
    return VkFail(r, "vkCreatePipelineLayout");
  }

  VkComputePipelineCreateInfo pipeline_info{};
  pipeline_info.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
  pipeline_info.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  pipeline_info.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  pipeline_info.stage.module = objects.module;
  pipeline_info.stage.pName = command.entry_point.c_str();
  pipeline_info.layout = objects.pipeline_layout;
  if (VkResult r = vkCreateComputePipelines(device, VK_NULL_HANDLE, 1, &pipeline_info, nullptr,
                                            &objects.pipeline);
      r != VK_SUCCESS) {
    return Fail(r == VK_ERROR_OUT_OF_HOST_MEMORY || r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? ENOMEM
                                                                                      : EINVAL,
                fmt::format("vkCreateComputePipelines: {}", VkResultName(r)));
  }

  VkDescriptorSet set = VK_NULL_HANDLE;
  if (!command.bindings.empty()) {
    const VkDescriptorPoolSize pool_size{.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                         .descriptorCount =
                                             static_cast<uint32_t>(command.bindings.size())};
    VkDescriptorPoolCreateInfo pool_info{};
    pool_info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO;
    pool_info.maxSets = 1;
    pool_info.poolSizeCount = 1;
    pool_info.pPoolSizes = &pool_size;
    if (VkResult r = vkCreateDescriptorPool(device, &pool_info, nullptr, &objects.descriptor_pool);
        r != VK_SUCCESS) {
      return VkFail(r, "vkCreateDescriptorPool");
    }
    VkDescriptorSetAllocateInfo set_alloc{};
    set_alloc.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
    set_alloc.descriptorPool = objects.descriptor_pool;
    set_alloc.descriptorSetCount = 1;
    set_alloc.pSetLayouts = &objects.set_layout;
    if (VkResult r = vkAllocateDescriptorSets(device, &set_alloc, &set); r != VK_SUCCESS) {
      return VkFail(r, "vkAllocateDescriptorSets");
    }
    std::vector<VkDescriptorBufferInfo> infos;
    infos.reserve(command.bindings.size());
    std::vector<VkWriteDescriptorSet> writes;
    for (const BufferBinding& b : command.bindings) {
      infos.push_back(VkDescriptorBufferInfo{.buffer = buffer_, .offset = b.offset, .range = b.size});
      VkWriteDescriptorSet write{};
      write.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
      write.dstSet = set;
      write.dstBinding = b.binding;
      write.descriptorCount = 1;
      write.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      write.pBufferInfo = &infos.back();
      writes.push_back(write);
    }
    vkUpdateDescriptorSets(device, static_cast<uint32_t>(writes.size()), writes.data(), 0,
                           nullptr);
  }

  return dev_->Submit([&](VkCommandBuffer cmd) {
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, objects.pipeline);
    if (set != VK_NULL_HANDLE) {
      vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, objects.pipeline_layout, 0, 1,
                              &set, 0, nullptr);
    }
    if (!command.push_constants.empty()) {
      vkCmdPushConstants(cmd, objects.pipeline_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                         static_cast<uint32_t>(command.push_constants.size()),
                         command.push_constants.data());
    }
    vkCmdDispatch(cmd, command.groups_x, command.groups_y, command.groups_z);
  });
}

// Thread-safe.
class VulkanEngine final : public Engine {
 public:
  explicit VulkanEngine(std::shared_ptr<VulkanDevice> device) : dev_(std::move(device)) {}

  EngineKind kind() const override { return EngineKind::kVulkan; }
  std::string name() const override { return dev_->name; }
  uint64_t memory_capacity() const override { return dev_->capacity; }
  uint64_t memory_allocated() const override { return dev_->allocated(); }

  Result<std::unique_ptr<Slice>> CreateSlice(uint64_t size) override {
    if (size == 0 || size % kWordBytes != 0) {
      return Fail(EINVAL, fmt::format("slice size {:#x} (a non-zero multiple of 4)", size));
    }
    UMDEV_TRY(dev_->Take(size));
    auto slice = std::make_unique<VulkanSlice>(dev_, size);  // gives the size back if Init fails
    UMDEV_TRY(slice->Init());
    return slice;
  }

 private:
  std::shared_ptr<VulkanDevice> dev_;
};

// Device-local host-visible memory first (llvmpipe, resizable-BAR GPUs), then
// any host-visible coherent type: the daemon needs a host pointer for guest
// copies and, later, to back BAR2.
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

}  // namespace

Result<std::shared_ptr<Engine>> CreateVulkanEngine(const VulkanEngineOptions& options) {
  auto dev = std::make_shared<VulkanDevice>();
  UMDEV_ASSIGN_OR_RETURN(dev->instance, CreateComputeInstance());
  if (!dev->instance.valid()) return Fail(ENODEV, "no Vulkan driver installed");
  UMDEV_ASSIGN_OR_RETURN(auto devices, EnumeratePhysicalDevices(dev->instance.get()));
  if (options.device_index >= devices.size()) {
    return Fail(ENODEV, fmt::format("no Vulkan device {} ({} present)", options.device_index,
                                    devices.size()));
  }
  dev->physical = devices[options.device_index];

  VkPhysicalDeviceProperties properties{};
  vkGetPhysicalDeviceProperties(dev->physical, &properties);
  dev->name = properties.deviceName;
  dev->limits = properties.limits;

  uint32_t family_count = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(dev->physical, &family_count, nullptr);
  std::vector<VkQueueFamilyProperties> families(family_count);
  vkGetPhysicalDeviceQueueFamilyProperties(dev->physical, &family_count, families.data());
  const auto family = std::find_if(families.begin(), families.end(), [](const auto& f) {
    return (f.queueFlags & VK_QUEUE_COMPUTE_BIT) != 0 && f.queueCount > 0;
  });
  if (family == families.end()) return Fail(ENODEV, fmt::format("{} has no compute queue", dev->name));
  const uint32_t family_index = static_cast<uint32_t>(family - families.begin());

  uint64_t heap_size = 0;
  UMDEV_ASSIGN_OR_RETURN(dev->memory_type, PickMemoryType(dev->physical, heap_size));
  dev->capacity = options.memory_limit == 0 ? heap_size : std::min(options.memory_limit, heap_size);

  // Robust buffer access keeps a kernel's stray index inside its own binding,
  // which is what keeps one slice out of another's memory on the device.
  VkPhysicalDeviceFeatures supported{};
  vkGetPhysicalDeviceFeatures(dev->physical, &supported);
  if (supported.robustBufferAccess != VK_TRUE) {
    return Fail(ENOTSUP, fmt::format("{} lacks robustBufferAccess", dev->name));
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
  dev->import_alignment = HostImportAlignment(dev->physical);
  if (dev->import_alignment != 0) extensions.push_back(VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);

  VkDeviceCreateInfo device_info{};
  device_info.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
  device_info.queueCreateInfoCount = 1;
  device_info.pQueueCreateInfos = &queue_info;
  device_info.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
  device_info.ppEnabledExtensionNames = extensions.data();
  device_info.pEnabledFeatures = &enabled;
  if (VkResult r = vkCreateDevice(dev->physical, &device_info, nullptr, &dev->device);
      r != VK_SUCCESS) {
    return VkFail(r, "vkCreateDevice");
  }
  vkGetDeviceQueue(dev->device, family_index, 0, &dev->queue);
  if (!extensions.empty()) {
    dev->get_host_pointer_properties = reinterpret_cast<PFN_vkGetMemoryHostPointerPropertiesEXT>(
        vkGetDeviceProcAddr(dev->device, "vkGetMemoryHostPointerPropertiesEXT"));
    dev->host_import = dev->get_host_pointer_properties != nullptr;
  }

  VkCommandPoolCreateInfo pool_info{};
  pool_info.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
  pool_info.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pool_info.queueFamilyIndex = family_index;
  if (VkResult r = vkCreateCommandPool(dev->device, &pool_info, nullptr, &dev->pool);
      r != VK_SUCCESS) {
    return VkFail(r, "vkCreateCommandPool");
  }
  VkFenceCreateInfo fence_info{};
  fence_info.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
  if (VkResult r = vkCreateFence(dev->device, &fence_info, nullptr, &dev->fence);
      r != VK_SUCCESS) {
    return VkFail(r, "vkCreateFence");
  }
  return std::make_shared<VulkanEngine>(std::move(dev));
}

}  // namespace umdev::vendor::gpu
