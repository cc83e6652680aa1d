#include "vulkan_device.h"

#include <cerrno>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "umdev/common/scope_exit.h"
#include "vulkan_util.h"

namespace umdev::vendor::gpu {

Result<std::shared_ptr<VulkanContext>> VulkanDevice::Current() {
  MutexLock lock(ctx_mu_);
  if (current_ == nullptr) {
    return Fail(EIO, fmt::format("{}: the device is wedged after {} resets; the parent "
                                 "needs a daemon restart",
                                 name, resets_));
  }
  return current_;
}

std::unexpected<Error> VulkanDevice::CallFailed(const VulkanContext& ctx, VkResult result,
                                                std::string_view what) {
  if (result == VK_ERROR_DEVICE_LOST) {
    MutexLock lock(queue_mu_);
    if (IsCurrent(ctx)) Reset(fmt::format("{} lost the device", what));
  }
  return VkFail(result, what);
}

Result<void> VulkanDevice::Take(uint64_t size) {
  MutexLock lock(account_mu_);
  if (size > capacity - allocated_) {
    return Fail(ENOSPC, fmt::format("slice of {:#x} bytes: only {:#x} of {:#x} left", size,
                                    capacity - allocated_, capacity));
  }
  allocated_ += size;
  return {};
}

Result<void> VulkanDevice::Submit(const VulkanContext& ctx,
                                  const std::function<void(VkCommandBuffer)>& record,
                                  SubmitOutcome& outcome) {
  MutexLock lock(queue_mu_);
  if (!IsCurrent(ctx)) {
    outcome.stale = true;
    return Fail(EIO, "the device was reset before the command ran");
  }
  auto failed = [&](VkResult r, std::string_view what) {
    if (r == VK_ERROR_DEVICE_LOST) Reset(fmt::format("{} lost the device", what));
    return VkFail(r, what);
  };
  VkCommandBufferAllocateInfo alloc{};
  alloc.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
  alloc.commandPool = ctx.pool;
  alloc.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  alloc.commandBufferCount = 1;
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  if (VkResult r = vkAllocateCommandBuffers(ctx.device, &alloc, &cmd); r != VK_SUCCESS) {
    return failed(r, "vkAllocateCommandBuffers");
  }
  ScopeExit free_cmd([&] { vkFreeCommandBuffers(ctx.device, ctx.pool, 1, &cmd); });
  VkCommandBufferBeginInfo begin{};
  begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
  begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  if (VkResult r = vkBeginCommandBuffer(cmd, &begin); r != VK_SUCCESS) {
    return failed(r, "vkBeginCommandBuffer");
  }
  Barrier(cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
          VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT);
  record(cmd);
  Barrier(cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_PIPELINE_STAGE_HOST_BIT,
          VK_ACCESS_HOST_READ_BIT | VK_ACCESS_HOST_WRITE_BIT);
  if (VkResult r = vkEndCommandBuffer(cmd); r != VK_SUCCESS) {
    return failed(r, "vkEndCommandBuffer");
  }
  if (VkResult r = vkResetFences(ctx.device, 1, &ctx.fence); r != VK_SUCCESS) {
    return failed(r, "vkResetFences");
  }
  VkSubmitInfo submit{};
  submit.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &cmd;
  if (VkResult r = vkQueueSubmit(ctx.queue, 1, &submit, ctx.fence); r != VK_SUCCESS) {
    if (r == VK_ERROR_DEVICE_LOST) {
      free_cmd.Dismiss();
      ctx.Keep(cmd);
      outcome.abandoned = true;
    }
    return failed(r, "vkQueueSubmit");
  }
  const auto timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(
      options_.dispatch_timeout);
  const VkResult waited = vkWaitForFences(ctx.device, 1, &ctx.fence, VK_TRUE,
                                          static_cast<uint64_t>(timeout.count()));
  if (waited == VK_SUCCESS) return {};
  // The command buffer may still be executing: it, and everything it uses,
  // stays allocated for good.
  free_cmd.Dismiss();
  ctx.Keep(cmd);
  outcome.abandoned = true;
  if (waited == VK_TIMEOUT) {
    Reset(fmt::format("a command ran past the {} ms dispatch timeout",
                      options_.dispatch_timeout.count()));
    return Fail(ETIMEDOUT, fmt::format("the command ran past the {} ms dispatch timeout and was "
                                       "abandoned with its device",
                                       options_.dispatch_timeout.count()));
  }
  Reset(fmt::format("vkWaitForFences: {}", VkResultName(waited)));
  return VkFail(waited, "vkWaitForFences (the device was reset)");
}

void VulkanDevice::Reset(std::string_view why) {
  std::shared_ptr<VulkanContext> old;
  uint64_t resets = 0;
  {
    MutexLock lock(ctx_mu_);
    old = current_;
    resets = resets_;
  }
  if (old == nullptr) return;
  old->abandoned = true;
  KeepForever(old);
  Result<std::shared_ptr<VulkanContext>> fresh =
      Fail(EIO, fmt::format("more than {} device resets", options_.max_device_resets));
  if (resets < options_.max_device_resets) {
    fresh = CreateVulkanContext(options_.device_index, old->device_uuid);
  }
  MutexLock lock(ctx_mu_);
  if (!fresh.has_value()) {
    current_ = nullptr;
    spdlog::error("gpu: {}: {}; cannot reset the device ({}): every later command on it fails "
                  "with EIO",
                  name, why, fresh.error().Describe());
    return;
  }
  current_ = std::move(*fresh);
  ++resets_;
  spdlog::warn("gpu: {}: {}; abandoned the device and made a fresh one (reset {} of at most {})",
               name, why, resets_, options_.max_device_resets);
}

}  // namespace umdev::vendor::gpu
