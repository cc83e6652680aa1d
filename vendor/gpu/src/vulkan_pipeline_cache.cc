#include "vulkan_pipeline_cache.h"

#include <algorithm>
#include <cstring>

namespace umdev::vendor::gpu {

bool PipelineCache::Matches(const Entry& entry, const DispatchCommand& command) {
  if (entry.spirv.size() != command.spirv.size() || entry.entry_point != command.entry_point ||
      entry.push_size != command.push_constants.size() || entry.bindings.size() != command.bindings.size()) {
    return false;
  }
  for (size_t i = 0; i < entry.bindings.size(); ++i) {
    if (entry.bindings[i] != command.bindings[i].binding) return false;
  }
  return std::memcmp(entry.spirv.data(), command.spirv.data(), command.spirv.size_bytes()) == 0;
}

bool PipelineCache::Holds(const DispatchCommand& command) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [&](const Entry& entry) { return Matches(entry, command); });
}

const CachedPipeline* PipelineCache::Find(const std::shared_ptr<VulkanContext>& ctx,
                                          const DispatchCommand& command) {
  if (ctx != ctx_) {
    Clear();
    return nullptr;
  }
  for (Entry& entry : entries_) {
    if (Matches(entry, command)) {
      entry.last_use = ++clock_;
      return &entry.pipeline;
    }
  }
  return nullptr;
}

const CachedPipeline* PipelineCache::Insert(const std::shared_ptr<VulkanContext>& ctx,
                                            const DispatchCommand& command, CachedPipeline pipeline) {
  if (ctx != ctx_) {
    Clear();
    ctx_ = ctx;
  }
  const size_t bytes = command.spirv.size_bytes();
  while (!entries_.empty() && (entries_.size() >= kMaxEntries || spirv_bytes_ + bytes > kMaxSpirvBytes)) {
    auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                   [](const Entry& a, const Entry& b) { return a.last_use < b.last_use; });
    Destroy(oldest->pipeline, false);
    spirv_bytes_ -= oldest->spirv.size() * sizeof(uint32_t);
    entries_.erase(oldest);
  }
  Entry entry{.spirv = {command.spirv.begin(), command.spirv.end()},
              .entry_point = command.entry_point,
              .bindings = {},
              .push_size = command.push_constants.size(),
              .pipeline = pipeline,
              .last_use = ++clock_};
  for (const BufferBinding& b : command.bindings) entry.bindings.push_back(b.binding);
  spirv_bytes_ += bytes;
  entries_.push_back(std::move(entry));
  return &entries_.back().pipeline;
}

void PipelineCache::Destroy(const CachedPipeline& p, bool keep) const {
  if (ctx_ == nullptr) return;
  if (keep || ctx_->abandoned) {
    ctx_->Keep(p.pipeline);
    ctx_->Keep(p.layout);
    ctx_->Keep(p.set_layout);
    ctx_->Keep(p.module);
    return;
  }
  const VkDevice device = ctx_->device;
  if (p.pipeline != VK_NULL_HANDLE) vkDestroyPipeline(device, p.pipeline, nullptr);
  if (p.layout != VK_NULL_HANDLE) vkDestroyPipelineLayout(device, p.layout, nullptr);
  if (p.set_layout != VK_NULL_HANDLE) vkDestroyDescriptorSetLayout(device, p.set_layout, nullptr);
  if (p.module != VK_NULL_HANDLE) vkDestroyShaderModule(device, p.module, nullptr);
}

void PipelineCache::Clear() {
  for (const Entry& entry : entries_) Destroy(entry.pipeline, false);
  entries_.clear();
  spirv_bytes_ = 0;
  ctx_ = nullptr;
}

void PipelineCache::Abandon() {
  for (const Entry& entry : entries_) Destroy(entry.pipeline, true);
  entries_.clear();
  spirv_bytes_ = 0;
  ctx_ = nullptr;
}

}  // namespace umdev::vendor::gpu
