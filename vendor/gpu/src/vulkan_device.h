// VulkanDevice: the Vulkan engine's state shared with its slices: the
// current device generation (VulkanContext), its queue with the dispatch
// watchdog, the capacity account and the SPIR-V validator.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "spirv_validator.h"
#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/vendor/gpu/engine.h"
#include "vulkan_context.h"

namespace umdev::vendor::gpu {

// How a submission ended besides its result.
struct SubmitOutcome {
  // The generation was replaced before the submission: nothing ran, the
  // caller rebuilds its objects on the current generation and retries.
  bool stale = false;
  // The submission may still be running on an abandoned generation: its
  // objects and the memory it binds must never be freed.
  bool abandoned = false;
};

// The engine's state shared with its slices: the current device generation,
// its queue, the capacity account and the SPIR-V validator. Thread-safe:
// queue_mu_ serialises the queue, command pool and fence (Vulkan requires
// them externally synchronised) and every generation change; ctx_mu_ guards
// the pointer to the current generation. Lock order: queue_mu_, ctx_mu_.
class VulkanDevice {
 public:
  VulkanDevice(const VulkanEngineOptions& options, std::shared_ptr<VulkanContext> ctx,
               uint64_t capacity_bytes)
      : name(ctx->name),
        limits(ctx->limits),
        capacity(capacity_bytes),
        validator(ctx->api_version),
        options_(options),
        current_(std::move(ctx)) {}
  VulkanDevice(const VulkanDevice&) = delete;
  VulkanDevice& operator=(const VulkanDevice&) = delete;

  // The generation new work goes to; EIO once the engine is wedged.
  Result<std::shared_ptr<VulkanContext>> Current();

  // Records through |record| into a fresh command buffer on |ctx|, submits
  // it and waits for it at most the dispatch timeout. Full memory barriers
  // before and after make the previous submission's writes visible to this
  // one and this one's to the host.
  Result<void> Submit(const VulkanContext& ctx, const std::function<void(VkCommandBuffer)>& record,
                      SubmitOutcome& outcome);

  // |result| of a call on |ctx|, as an error; a lost device also resets it.
  std::unexpected<Error> CallFailed(const VulkanContext& ctx, VkResult result,
                                    std::string_view what);

  uint64_t resets() {
    MutexLock lock(ctx_mu_);
    return resets_;
  }

  // ENOSPC when less than |size| of the capacity is left.
  Result<void> Take(uint64_t size);
  void Give(uint64_t size) {
    MutexLock lock(account_mu_);
    allocated_ -= size;
  }
  uint64_t allocated() {
    MutexLock lock(account_mu_);
    return allocated_;
  }

  // The same for every generation (one physical device).
  const std::string name;
  const VkPhysicalDeviceLimits limits;
  const uint64_t capacity;
  SpirvValidator validator;

 private:
  bool IsCurrent(const VulkanContext& ctx) UMDEV_REQUIRES(queue_mu_) {
    MutexLock lock(ctx_mu_);
    return current_.get() == &ctx;
  }
  // Abandons the current generation (a submission may still run on it, so
  // nothing of it is destroyed) and makes a fresh one; past
  // max_device_resets, or when that fails, the engine is wedged.
  void Reset(std::string_view why) UMDEV_REQUIRES(queue_mu_);

  static void Barrier(VkCommandBuffer cmd, VkPipelineStageFlags src, VkPipelineStageFlags dst,
                      VkAccessFlags dst_access) {
    VkMemoryBarrier barrier{};
    barrier.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
    barrier.srcAccessMask = VK_ACCESS_MEMORY_WRITE_BIT;
    barrier.dstAccessMask = dst_access;
    vkCmdPipelineBarrier(cmd, src, dst, 0, 1, &barrier, 0, nullptr, 0, nullptr);
  }

  const VulkanEngineOptions options_;
  Mutex queue_mu_;
  Mutex ctx_mu_;
  std::shared_ptr<VulkanContext> current_ UMDEV_GUARDED_BY(ctx_mu_);  // null: wedged
  uint64_t resets_ UMDEV_GUARDED_BY(ctx_mu_) = 0;
  Mutex account_mu_;
  uint64_t allocated_ UMDEV_GUARDED_BY(account_mu_) = 0;
};

}  // namespace umdev::vendor::gpu
