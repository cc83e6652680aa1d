// The argument checks every engine applies before touching slice memory, so
// a command is refused with the same errno whichever engine would run it.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "umdev/common/error.h"
#include "umdev/vendor/gpu/engine.h"

namespace umdev::vendor::gpu {

// [offset, offset + size) inside [0, slice_size), without overflow: EFAULT.
Result<void> CheckRange(uint64_t slice_size, uint64_t offset, uint64_t size,
                        std::string_view what);
// Sizes not 0 (EINVAL), both ranges inside (EFAULT), no overlap (EINVAL).
Result<void> CheckCopy(uint64_t slice_size, uint64_t dst, uint64_t src, uint64_t size);
// Size not 0 and both offset and size word-aligned (EINVAL), inside (EFAULT).
Result<void> CheckFill(uint64_t slice_size, uint64_t offset, uint64_t size);
// Group counts not 0, entry point named, push constants word-sized and at
// most kMaxPushConstantBytes, at most kMaxBindings bindings numbered below
// kMaxBindings without repeats, each word-aligned and not empty (EINVAL);
// each binding inside the slice (EFAULT).
Result<void> CheckDispatch(uint64_t slice_size, const DispatchCommand& command);

// The SPIR-V facts the Vulkan engine checks before a module reaches the
// driver, whose compiler is not written to survive hostile input.
struct SpirvInterface {
  bool has_entry_point = false;      // a GLCompute OpEntryPoint of that name
  uint32_t max_descriptor_set = 0;   // highest DescriptorSet decoration
  uint32_t binding_mask = 0;         // Binding decorations below 32, as bits
  bool binding_out_of_range = false; // a Binding decoration of 32 or more
  // A bound variable that is not a storage buffer (a uniform buffer, an
  // image, an array of buffers): the engine binds storage buffers only.
  bool non_storage_buffer_binding = false;
  // The largest push-constant block the module declares (Offset + size of
  // its last member); 0 when it declares none.
  uint32_t push_constant_bytes = 0;
};

// Walks the module's instructions: bad magic, truncated header or an
// instruction running past the end, a push-constant block whose layout it
// cannot size: EINVAL.
Result<SpirvInterface> InspectSpirv(std::span<const uint32_t> words,
                                    std::string_view entry_point);

}  // namespace umdev::vendor::gpu
