// VulkanEngine: slices are VkDeviceMemory allocations on one physical device;
// COPY, FILL and DISPATCH are recorded into command buffers and run on its
// compute queue, one submission at a time, each bounded by the dispatch
// timeout. A submission that runs past it (or a lost device) abandons the
// device generation and the engine makes a fresh one (vulkan_device.h);
// slices move their memory over on their next command.

#include <vulkan/vulkan.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>

#include <fmt/format.h>

#include "shared_memory.h"
#include "slice_bounds.h"
#include "umdev/common/guest_memory.h"
#include "umdev/vendor/gpu/engine.h"
#include "vulkan_context.h"
#include "vulkan_device.h"
#include "vulkan_pipeline_cache.h"
#include "vulkan_util.h"

namespace umdev::vendor::gpu {
namespace {

// A command that found its generation replaced while it was being prepared
// is rebuilt on the new one this many times before it gives up with EIO.
constexpr int kPrepareAttempts = 3;

// Per-dispatch Vulkan objects, destroyed in reverse order of creation unless
// the submission that used them was abandoned.
struct DispatchObjects {
  VkDevice device = VK_NULL_HANDLE;
  VkShaderModule module = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
  VkPipelineLayout pipeline_layout = VK_NULL_HANDLE;
  VkPipeline pipeline = VK_NULL_HANDLE;
  VkDescriptorPool descriptor_pool = VK_NULL_HANDLE;
  DispatchObjects() = default;
  DispatchObjects(const DispatchObjects&) = delete;
  DispatchObjects& operator=(const DispatchObjects&) = delete;
  // Hands the objects to |ctx| (abandoned) instead of destroying them: a
  // wedged kernel may still use them.
  void KeepIn(const VulkanContext& ctx) {
    ctx.Keep(module);
    ctx.Keep(set_layout);
    ctx.Keep(pipeline_layout);
    ctx.Keep(pipeline);
    ctx.Keep(descriptor_pool);
    device = VK_NULL_HANDLE;
  }
  ~DispatchObjects() {
    if (device == VK_NULL_HANDLE) return;
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
    if (poisoned_ && shared_.mapping.valid()) {
      // A kernel abandoned on a wedged device may still write these pages.
      KeepForever(std::make_shared<SharedMemory>(std::move(shared_)));
    }
    dev_->Give(size_);
  }

  // One buffer over the whole slice, its memory reachable from the host,
  // zeroed. Imports a memfd mapping where the driver can, so the memory can
  // be shared with a client; otherwise (or when the import fails) allocates
  // device memory and maps it.
  Result<void> Init() {
    UMDEV_ASSIGN_OR_RETURN(std::shared_ptr<VulkanContext> ctx, dev_->Current());
    if (ctx->host_import) {
      if (InitImported(ctx).has_value()) return {};
      Release();
      shared_ = SharedMemory{};
    }
    UMDEV_TRY(Allocate(ctx, nullptr));
    // Fresh allocations may hold a previous tenant's data: zero on the device.
    return Run([&](VkCommandBuffer cmd) { vkCmdFillBuffer(cmd, buffer_, 0, VK_WHOLE_SIZE, 0); });
  }

  uint64_t size() const override { return size_; }
  int memory_fd() const override { return shared_.fd ? shared_.fd.get() : -1; }

  Result<void> Write(uint64_t offset, std::span<const std::byte> data) override {
    UMDEV_TRY(CheckRange(size_, offset, data.size(), "write"));
    // |data| may be pinned guest memory, which the client can truncate.
    return CopyGuestMemory(Host() + offset, data.data(), data.size());
  }

  Result<void> Read(uint64_t offset, std::span<std::byte> out) override {
    UMDEV_TRY(CheckRange(size_, offset, out.size(), "read"));
    return CopyGuestMemory(out.data(), Host() + offset, out.size());
  }

  Result<void> Copy(uint64_t dst, uint64_t src, uint64_t bytes) override {
    UMDEV_TRY(CheckCopy(size_, dst, src, bytes));
    return Run([&](VkCommandBuffer cmd) {
      const VkBufferCopy region{.srcOffset = src, .dstOffset = dst, .size = bytes};
      vkCmdCopyBuffer(cmd, buffer_, buffer_, 1, &region);
    });
  }

  Result<void> Fill(uint64_t offset, uint64_t bytes, uint32_t pattern) override {
    UMDEV_TRY(CheckFill(size_, offset, bytes));
    return Run([&](VkCommandBuffer cmd) {
      vkCmdFillBuffer(cmd, buffer_, offset, bytes, pattern);
    });
  }

  Result<void> Dispatch(const DispatchCommand& command) override;

 private:
  std::byte* Host() const {
    if (shared_.mapping.valid()) return shared_.mapping.data();
    return static_cast<std::byte*>(mapped_ != nullptr ? mapped_ : const_cast<void*>(carried_));
  }
  Result<void> CheckInterface(const DispatchCommand& command);
  Result<void> CheckDeviceLimits(const DispatchCommand& command) const;
  // Records |record| (which may use buffer_) on the current generation.
  Result<void> Run(const std::function<void(VkCommandBuffer)>& record);
  // Moves the slice's buffer to |ctx| when it lives on an older generation.
  Result<void> BindTo(const std::shared_ptr<VulkanContext>& ctx);
  Result<void> CreateBuffer(const VulkanContext& ctx, bool external_host);
  Result<void> InitImported(const std::shared_ptr<VulkanContext>& ctx);
  Result<void> Import(const std::shared_ptr<VulkanContext>& ctx);
  // Allocates and maps device memory, copying |contents| (size_ bytes) in.
  Result<void> Allocate(const std::shared_ptr<VulkanContext>& ctx, const void* contents);
  Result<void> BuildAndSubmit(const std::shared_ptr<VulkanContext>& ctx,
                              const DispatchCommand& command, SubmitOutcome& outcome);
  // Creates the module, layouts and pipeline for |command| into |objects|.
  Result<void> BuildPipeline(VulkanContext& ctx, const DispatchCommand& command, DispatchObjects& objects,
                             const std::function<Result<void>(VkResult, std::string_view)>& failed);
  // Frees the Vulkan objects before the memory they may point into; those
  // of an abandoned generation are dropped instead (work may be pending).
  void Release() {
    if (ctx_ != nullptr && !ctx_->abandoned) {
      if (mapped_ != nullptr) vkUnmapMemory(ctx_->device, memory_);
      if (buffer_ != VK_NULL_HANDLE) vkDestroyBuffer(ctx_->device, buffer_, nullptr);
      if (memory_ != VK_NULL_HANDLE) vkFreeMemory(ctx_->device, memory_, nullptr);
    } else if (ctx_ != nullptr) {
      ctx_->Keep(buffer_);
      ctx_->Keep(memory_);
    }
    mapped_ = nullptr;
    buffer_ = VK_NULL_HANDLE;
    memory_ = VK_NULL_HANDLE;
    ctx_ = nullptr;
  }

  std::shared_ptr<VulkanDevice> dev_;
  const uint64_t size_;
  std::shared_ptr<VulkanContext> ctx_;  // the generation buffer_ and memory_ live on
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  void* mapped_ = nullptr;     // vkMapMemory's pointer (allocated memory)
  // An abandoned generation's mapping whose contents the next BindTo copies.
  const void* carried_ = nullptr;
  SharedMemory shared_;        // the memfd (imported memory)
  // A command of this slice was abandoned while it may still run.
  bool poisoned_ = false;
  PipelineCache pipelines_;
};

Result<void> VulkanSlice::Run(const std::function<void(VkCommandBuffer)>& record) {
  for (int attempt = 0; attempt < kPrepareAttempts; ++attempt) {
    UMDEV_ASSIGN_OR_RETURN(std::shared_ptr<VulkanContext> ctx, dev_->Current());
    UMDEV_TRY(BindTo(ctx));
    SubmitOutcome outcome;
    Result<void> result = dev_->Submit(*ctx, record, outcome);
    if (outcome.abandoned) poisoned_ = true;
    if (!outcome.stale) return result;
  }
  return Fail(EIO, "the device kept being reset while the command was prepared");
}

Result<void> VulkanSlice::BindTo(const std::shared_ptr<VulkanContext>& ctx) {
  if (ctx_ == ctx) return {};
  // The old generation's memory stays mapped (abandoned objects are never
  // freed), so allocated memory can be copied over; imported memory is the
  // memfd itself and needs no copy.
  if (mapped_ != nullptr) carried_ = mapped_;
  Release();
  Result<void> bound = shared_.mapping.valid() ? Import(ctx) : Allocate(ctx, carried_);
  if (!bound.has_value()) {
    Release();  // retried by the next command
    return bound;
  }
  carried_ = nullptr;
  return {};
}

Result<void> VulkanSlice::CreateBuffer(const VulkanContext& ctx, bool external_host) {
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
  if (VkResult r = vkCreateBuffer(ctx.device, &info, nullptr, &buffer_); r != VK_SUCCESS) {
    return dev_->CallFailed(ctx, r, "vkCreateBuffer");
  }
  return {};
}

Result<void> VulkanSlice::Allocate(const std::shared_ptr<VulkanContext>& ctx,
                                   const void* contents) {
  ctx_ = ctx;
  UMDEV_TRY(CreateBuffer(*ctx, false));
  VkMemoryRequirements req{};
  vkGetBufferMemoryRequirements(ctx->device, buffer_, &req);
  if ((req.memoryTypeBits & (1u << ctx->memory_type)) == 0) {
    return Fail(ENOTSUP, "slice buffer cannot live in the host-visible memory type");
  }
  VkMemoryAllocateInfo alloc{};
  alloc.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
  alloc.allocationSize = req.size;
  alloc.memoryTypeIndex = ctx->memory_type;
  if (VkResult r = vkAllocateMemory(ctx->device, &alloc, nullptr, &memory_); r != VK_SUCCESS) {
    return dev_->CallFailed(*ctx, r, "vkAllocateMemory");
  }
  if (VkResult r = vkBindBufferMemory(ctx->device, buffer_, memory_, 0); r != VK_SUCCESS) {
    return dev_->CallFailed(*ctx, r, "vkBindBufferMemory");
  }
  if (VkResult r = vkMapMemory(ctx->device, memory_, 0, VK_WHOLE_SIZE, 0, &mapped_);
      r != VK_SUCCESS) {
    return dev_->CallFailed(*ctx, r, "vkMapMemory");
  }
  if (contents != nullptr) std::memcpy(mapped_, contents, size_);
  return {};
}

Result<void> VulkanSlice::InitImported(const std::shared_ptr<VulkanContext>& ctx) {
  UMDEV_TRY(CreateBuffer(*ctx, true));
  VkMemoryRequirements req{};
  vkGetBufferMemoryRequirements(ctx->device, buffer_, &req);
  const uint64_t align = std::max<uint64_t>(ctx->import_alignment, req.alignment);
  const uint64_t bytes = (std::max<uint64_t>(req.size, size_) + align - 1) / align * align;
  vkDestroyBuffer(ctx->device, buffer_, nullptr);
  buffer_ = VK_NULL_HANDLE;
  // A fresh memfd is zero-filled: no previous tenant's data to clear.
  UMDEV_ASSIGN_OR_RETURN(shared_, CreateSharedMemory("umdev-gpu-slice", bytes));
  return Import(ctx);
}

Result<void> VulkanSlice::Import(const std::shared_ptr<VulkanContext>& ctx) {
  ctx_ = ctx;
  UMDEV_TRY(CreateBuffer(*ctx, true));
  VkMemoryRequirements req{};
  vkGetBufferMemoryRequirements(ctx->device, buffer_, &req);
  VkMemoryHostPointerPropertiesEXT pointer{};
  pointer.sType = VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT;
  if (VkResult r = ctx->get_host_pointer_properties(
          ctx->device, VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT,
          shared_.mapping.data(), &pointer);
      r != VK_SUCCESS) {
    return dev_->CallFailed(*ctx, r, "vkGetMemoryHostPointerPropertiesEXT");
  }
  // Host-coherent, so host access through the mapping needs no flushes.
  const uint32_t type = FindMemoryType(
      ctx->physical, pointer.memoryTypeBits & req.memoryTypeBits,
      VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
  if (type == UINT32_MAX) return Fail(ENOTSUP, "no coherent memory type imports host memory");
  VkImportMemoryHostPointerInfoEXT import{};
  import.sType = VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT;
  import.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
  import.pHostPointer = shared_.mapping.data();
  VkMemoryAllocateInfo alloc{};
  alloc.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
  alloc.pNext = &import;
  alloc.allocationSize = shared_.mapping.size();
  alloc.memoryTypeIndex = type;
  if (VkResult r = vkAllocateMemory(ctx->device, &alloc, nullptr, &memory_); r != VK_SUCCESS) {
    return dev_->CallFailed(*ctx, r, "vkAllocateMemory (host import)");
  }
  if (VkResult r = vkBindBufferMemory(ctx->device, buffer_, memory_, 0); r != VK_SUCCESS) {
    return dev_->CallFailed(*ctx, r, "vkBindBufferMemory");
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

// The driver's compiler trusts its input: refuse modules that are invalid
// (SPIRV-Tools' validator for the device's Vulkan version) or whose entry
// point, descriptors or push constants do not match what the command gives.
Result<void> VulkanSlice::CheckInterface(const DispatchCommand& command) {
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
  if (iface.non_storage_buffer_binding) {
    return Fail(EINVAL, "SPIR-V module binds something other than a storage buffer "
                        "(only storage buffers are bound)");
  }
  UMDEV_TRY(dev_->validator.Validate(command.spirv));
  if (iface.push_constant_bytes > command.push_constants.size()) {
    return Fail(EINVAL, fmt::format("SPIR-V module's push-constant block is {} bytes, the "
                                    "dispatch gives {}",
                                    iface.push_constant_bytes, command.push_constants.size()));
  }
  return {};
}

Result<void> VulkanSlice::Dispatch(const DispatchCommand& command) {
  UMDEV_TRY(CheckDispatch(size_, command));
  UMDEV_TRY(CheckDeviceLimits(command));
  // A module this slice compiled before for the same entry point, bindings
  // and push-constant size passed these checks and the validator then.
  if (!pipelines_.Holds(command)) UMDEV_TRY(CheckInterface(command));
  for (int attempt = 0; attempt < kPrepareAttempts; ++attempt) {
    UMDEV_ASSIGN_OR_RETURN(std::shared_ptr<VulkanContext> ctx, dev_->Current());
    UMDEV_TRY(BindTo(ctx));
    SubmitOutcome outcome;
    Result<void> result = BuildAndSubmit(ctx, command, outcome);
    if (outcome.abandoned) poisoned_ = true;
    if (!outcome.stale) return result;
  }
  return Fail(EIO, "the device kept being reset while the dispatch was prepared");
}

Result<void> VulkanSlice::BuildAndSubmit(const std::shared_ptr<VulkanContext>& ctx,
                                         const DispatchCommand& command,
                                         SubmitOutcome& outcome) {
  VkDevice device = ctx->device;
  DispatchObjects objects;
  objects.device = device;
  auto failed = [&](VkResult r, std::string_view what) {
    if (r == VK_ERROR_DEVICE_LOST) return dev_->CallFailed(*ctx, r, what);
    if (r == VK_ERROR_OUT_OF_HOST_MEMORY || r == VK_ERROR_OUT_OF_DEVICE_MEMORY) {
      return Fail(ENOMEM, std::string(what));
    }
    return Fail(EINVAL, fmt::format("{}: {}", what, VkResultName(r)));
  };

  const CachedPipeline* pipeline = pipelines_.Find(ctx, command);
  if (pipeline == nullptr) {
    UMDEV_TRY(BuildPipeline(*ctx, command, objects, failed));
    pipeline = pipelines_.Insert(ctx, command,
                                 {objects.module, objects.set_layout, objects.pipeline_layout, objects.pipeline});
    // The cache owns them now; |objects| keeps the descriptor pool only.
    objects.module = VK_NULL_HANDLE;
    objects.set_layout = VK_NULL_HANDLE;
    objects.pipeline_layout = VK_NULL_HANDLE;
    objects.pipeline = VK_NULL_HANDLE;
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
      return dev_->CallFailed(*ctx, r, "vkCreateDescriptorPool");
    }
    VkDescriptorSetAllocateInfo set_alloc{};
    set_alloc.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
    set_alloc.descriptorPool = objects.descriptor_pool;
    set_alloc.descriptorSetCount = 1;
    set_alloc.pSetLayouts = &pipeline->set_layout;
    if (VkResult r = vkAllocateDescriptorSets(device, &set_alloc, &set); r != VK_SUCCESS) {
      return dev_->CallFailed(*ctx, r, "vkAllocateDescriptorSets");
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

  Result<void> result = dev_->Submit(*ctx, [&](VkCommandBuffer cmd) {
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline->pipeline);
    if (set != VK_NULL_HANDLE) {
      vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline->layout, 0, 1,
                              &set, 0, nullptr);
    }
    if (!command.push_constants.empty()) {
      vkCmdPushConstants(cmd, pipeline->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                         static_cast<uint32_t>(command.push_constants.size()),
                         command.push_constants.data());
    }
    vkCmdDispatch(cmd, command.groups_x, command.groups_y, command.groups_z);
  }, outcome);
  if (outcome.abandoned) {
    objects.KeepIn(*ctx);
    pipelines_.Abandon();  // Kept by the abandoned generation: never destroyed.
  }
  return result;
}

Result<void> VulkanSlice::BuildPipeline(VulkanContext& ctx, const DispatchCommand& command,
                                        DispatchObjects& objects,
                                        const std::function<Result<void>(VkResult, std::string_view)>& failed) {
  VkDevice device = ctx.device;
  VkShaderModuleCreateInfo module_info{};
  module_info.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
  module_info.codeSize = command.spirv.size_bytes();
  module_info.pCode = command.spirv.data();
  if (VkResult r = vkCreateShaderModule(device, &module_info, nullptr, &objects.module);
      r != VK_SUCCESS) {
    return failed(r, "vkCreateShaderModule");
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
    return dev_->CallFailed(ctx, r, "vkCreateDescriptorSetLayout");
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
    return dev_->CallFailed(ctx, r, "vkCreatePipelineLayout");
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
    return failed(r, "vkCreateComputePipelines");
  }

  return {};
}

// Thread-safe.
class VulkanEngine final : public Engine {
 public:
  explicit VulkanEngine(std::shared_ptr<VulkanDevice> device) : dev_(std::move(device)) {}

  EngineKind kind() const override { return EngineKind::kVulkan; }
  std::string name() const override { return dev_->name; }
  uint64_t memory_capacity() const override { return dev_->capacity; }
  uint64_t memory_allocated() const override { return dev_->allocated(); }
  uint64_t device_resets() const override { return dev_->resets(); }

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

}  // namespace

Result<std::shared_ptr<Engine>> CreateVulkanEngine(const VulkanEngineOptions& options) {
  if (options.dispatch_timeout.count() <= 0) {
    return Fail(EINVAL, "Vulkan engine: dispatch timeout must be positive");
  }
  UMDEV_ASSIGN_OR_RETURN(std::shared_ptr<VulkanContext> ctx,
                         CreateVulkanContext(options.device_index, std::nullopt));
  const uint64_t capacity = options.memory_limit == 0
                                ? ctx->heap_size
                                : std::min(options.memory_limit, ctx->heap_size);
  return std::make_shared<VulkanEngine>(
      std::make_shared<VulkanDevice>(options, std::move(ctx), capacity));
}

}  // namespace umdev::vendor::gpu
