// PipelineCache: one slice's compiled DISPATCH pipelines. A guest runs the
// same kernel again and again (a loop of launches); building its pipeline
// each time meant SPIR-V validation and a driver compile per DISPATCH
// (milliseconds on llvmpipe). Kept per slice, not per engine, so that one
// tenant's timing never tells another which kernels it runs.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "umdev/vendor/gpu/engine.h"
#include "vulkan_context.h"

namespace umdev::vendor::gpu {

// The objects a DISPATCH binds; the descriptor set is made per command.
struct CachedPipeline {
  VkShaderModule module = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkPipeline pipeline = VK_NULL_HANDLE;
};

// Thread-compatible (its slice's).
class PipelineCache {
 public:
  static constexpr size_t kMaxEntries = 16;
  static constexpr size_t kMaxSpirvBytes = 4 << 20;  // Copies of the modules kept as keys.

  PipelineCache() = default;
  PipelineCache(const PipelineCache&) = delete;
  PipelineCache& operator=(const PipelineCache&) = delete;
  ~PipelineCache() { Clear(); }

  // Whether a pipeline for |command|'s module, entry point, bindings and
  // push-constant size was built (on any generation): that module passed
  // the interface checks and the validator then.
  bool Holds(const DispatchCommand& command) const;
  // The pipeline for |command| on |ctx|, or null. A different generation
  // than the entries' (the device was reset) empties the cache first.
  const CachedPipeline* Find(const std::shared_ptr<VulkanContext>& ctx, const DispatchCommand& command);
  // Takes |pipeline|'s objects, built on |ctx| for |command|; the least
  // recently used entries go past the bounds. Returns the entry.
  const CachedPipeline* Insert(const std::shared_ptr<VulkanContext>& ctx, const DispatchCommand& command,
                               CachedPipeline pipeline);
  // Destroys every entry; on an abandoned generation they are handed to it
  // instead (a wedged kernel may still use them).
  void Clear();
  // Hands every entry to its generation without destroying it: a command
  // that used one was abandoned and may still run.
  void Abandon();
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::vector<uint32_t> spirv;
    std::string entry_point;
    std::vector<uint32_t> bindings;
    size_t push_size = 0;
    CachedPipeline pipeline;
    uint64_t last_use = 0;
  };
  static bool Matches(const Entry& entry, const DispatchCommand& command);
  void Destroy(const CachedPipeline& pipeline, bool keep) const;

  std::shared_ptr<VulkanContext> ctx_;  // The generation every entry was built on.
  std::vector<Entry> entries_;
  size_t spirv_bytes_ = 0;
  uint64_t clock_ = 0;
};

}  // namespace umdev::vendor::gpu
