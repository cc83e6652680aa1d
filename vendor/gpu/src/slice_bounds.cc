#include "slice_bounds.h"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace umdev::vendor::gpu {

Result<void> CheckRange(uint64_t slice_size, uint64_t offset, uint64_t size,
                        std::string_view what) {
  if (offset > slice_size || size > slice_size - offset) {
    return Fail(EFAULT, fmt::format("{} [{:#x}, +{:#x}) outside the slice of {:#x} bytes", what,
                                    offset, size, slice_size));
  }
  return {};
}

Result<void> CheckCopy(uint64_t slice_size, uint64_t dst, uint64_t src, uint64_t size) {
  if (size == 0) return Fail(EINVAL, "copy of 0 bytes");
  UMDEV_TRY(CheckRange(slice_size, src, size, "copy source"));
  UMDEV_TRY(CheckRange(slice_size, dst, size, "copy destination"));
  if (src < dst + size && dst < src + size) {
    return Fail(EINVAL, fmt::format("copy ranges overlap (src {:#x}, dst {:#x}, {:#x} bytes)",
                                    src, dst, size));
  }
  return {};
}

Result<void> CheckFill(uint64_t slice_size, uint64_t offset, uint64_t size) {
  if (size == 0) return Fail(EINVAL, "fill of 0 bytes");
  if (offset % kWordBytes != 0 || size % kWordBytes != 0) {
    return Fail(EINVAL, fmt::format("fill [{:#x}, +{:#x}) not 4-byte aligned", offset, size));
  }
  return CheckRange(slice_size, offset, size, "fill");
}

Result<void> CheckDispatch(uint64_t slice_size, const DispatchCommand& command) {
  if (command.groups_x == 0 || command.groups_y == 0 || command.groups_z == 0) {
    return Fail(EINVAL, "dispatch with a zero group count");
  }
  if (command.entry_point.empty()) return Fail(EINVAL, "dispatch without an entry point");
  if (command.push_constants.size() > kMaxPushConstantBytes ||
      command.push_constants.size() % kWordBytes != 0) {
    return Fail(EINVAL, fmt::format("dispatch push constants of {} bytes (a multiple of 4, at "
                                    "most {})",
                                    command.push_constants.size(), kMaxPushConstantBytes));
  }
  if (command.bindings.size() > kMaxBindings) {
    return Fail(EINVAL, fmt::format("dispatch with {} bindings (at most {})",
                                    command.bindings.size(), kMaxBindings));
  }
  uint32_t seen = 0;
  for (const BufferBinding& b : command.bindings) {
    if (b.binding >= kMaxBindings) {
      return Fail(EINVAL, fmt::format("binding number {} (below {})", b.binding, kMaxBindings));
    }
    if ((seen & (1u << b.binding)) != 0) {
      return Fail(EINVAL, fmt::format("binding {} given twice", b.binding));
    }
    seen |= 1u << b.binding;
    if (b.size == 0 || b.offset % kWordBytes != 0 || b.size % kWordBytes != 0) {
      return Fail(EINVAL, fmt::format("binding {} [{:#x}, +{:#x}) empty or not 4-byte aligned",
                                      b.binding, b.offset, b.size));
    }
    UMDEV_TRY(CheckRange(slice_size, b.offset, b.size, fmt::format("binding {}", b.binding)));
  }
  return {};
}

namespace {
constexpr uint32_t kSpirvMagic = 0x07230203;
constexpr uint32_t kOpEntryPoint = 15;
constexpr uint32_t kOpDecorate = 71;
constexpr uint32_t kExecutionModelGLCompute = 5;
constexpr uint32_t kDecorationBinding = 33;
constexpr uint32_t kDecorationDescriptorSet = 34;
constexpr size_t kHeaderWords = 5;
}  // namespace

Result<SpirvInterface> InspectSpirv(std::span<const uint32_t> words,
                                    std::string_view entry_point) {
  if (words.size() < kHeaderWords || words[0] != kSpirvMagic) {
    return Fail(EINVAL, "not a SPIR-V module (bad magic or truncated header)");
  }
  SpirvInterface out;
  size_t at = kHeaderWords;
  while (at < words.size()) {
    const uint32_t word_count = words[at] >> 16;
    const uint32_t opcode = words[at] & 0xffff;
    if (word_count == 0 || word_count > words.size() - at) {
      return Fail(EINVAL, fmt::format("SPIR-V instruction at word {} runs past the module", at));
    }
    const std::span<const uint32_t> operands = words.subspan(at + 1, word_count - 1);
    if (opcode == kOpEntryPoint && operands.size() >= 3 &&
        operands[0] == kExecutionModelGLCompute) {
      // The name is a nul-terminated literal packed into the words after the id.
      const auto name_words = operands.subspan(2);
      const char* name = reinterpret_cast<const char*>(name_words.data());
      const size_t limit = name_words.size_bytes();
      const size_t length = strnlen(name, limit);
      if (length < limit && std::string_view(name, length) == entry_point) {
        out.has_entry_point = true;
      }
    } else if (opcode == kOpDecorate && operands.size() >= 3) {
      if (operands[1] == kDecorationDescriptorSet && operands[2] > out.max_descriptor_set) {
        out.max_descriptor_set = operands[2];
      } else if (operands[1] == kDecorationBinding) {
        if (operands[2] >= 32) {
          out.binding_out_of_range = true;
        } else {
          out.binding_mask |= 1u << operands[2];
        }
      }
    }
    at += word_count;
  }
  return out;
}

}  // namespace umdev::vendor::gpu
