#include "slice_bounds.h"

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

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
    // Named from a table: formatting the name on every DISPATCH, failed or
    // not, showed in the ring's profile.
    static constexpr std::string_view kNames[] = {"binding 0", "binding 1", "binding 2",
                                                  "binding 3", "binding 4", "binding 5",
                                                  "binding 6", "binding 7"};
    static_assert(std::size(kNames) == kMaxBindings);
    UMDEV_TRY(CheckRange(slice_size, b.offset, b.size, kNames[b.binding]));
  }
  return {};
}

namespace {
constexpr uint32_t kSpirvMagic = 0x07230203;
constexpr size_t kHeaderWords = 5;

enum SpirvOp : uint32_t {
  kOpEntryPoint = 15,
  kOpTypeInt = 21,
  kOpTypeFloat = 22,
  kOpTypeVector = 23,
  kOpTypeMatrix = 24,
  kOpTypeArray = 28,
  kOpTypeStruct = 30,
  kOpTypePointer = 32,
  kOpConstant = 43,
  kOpVariable = 59,
  kOpDecorate = 71,
  kOpMemberDecorate = 72,
};
enum SpirvDecoration : uint32_t {
  kDecorationBufferBlock = 3,
  kDecorationRowMajor = 4,
  kDecorationArrayStride = 6,
  kDecorationMatrixStride = 7,
  kDecorationBinding = 33,
  kDecorationDescriptorSet = 34,
  kDecorationOffset = 35,
};
constexpr uint32_t kExecutionModelGLCompute = 5;
constexpr uint32_t kStorageClassUniform = 2;
constexpr uint32_t kStorageClassPushConstant = 9;
constexpr uint32_t kStorageClassStorageBuffer = 12;
constexpr uint32_t kStorageClassPhysicalStorageBuffer = 5349;
// Deeper type nesting than any push-constant block needs; also stops a
// (not yet validated) module whose types refer to themselves.
constexpr int kMaxTypeDepth = 16;

// What the walk keeps of a module's types, decorations and variables.
struct SpirvTables {
  std::unordered_map<uint32_t, std::span<const uint32_t>> types;  // id -> operands
  std::unordered_map<uint32_t, uint32_t> type_opcode;
  std::unordered_map<uint32_t, uint32_t> constants;  // id -> low word
  std::unordered_map<uint32_t, uint32_t> array_stride;
  std::unordered_set<uint32_t> buffer_blocks;
  std::map<std::pair<uint32_t, uint32_t>, uint32_t> member_offset;
  std::map<std::pair<uint32_t, uint32_t>, uint32_t> member_matrix_stride;
  std::set<std::pair<uint32_t, uint32_t>> member_row_major;
  std::vector<std::pair<uint32_t, uint32_t>> variables;  // (pointer type, storage class)
  std::unordered_map<uint32_t, uint32_t> variable_type;  // variable id -> pointer type
  std::vector<uint32_t> bound_variables;                  // Binding-decorated ids
};

struct MemberLayout {
  uint32_t matrix_stride = 0;
  bool row_major = false;
};

Result<uint64_t> SizeOfType(const SpirvTables& t, uint32_t id, MemberLayout member, int depth) {
  const auto type = t.types.find(id);
  if (depth > kMaxTypeDepth || type == t.types.end()) {
    return Fail(EINVAL, "SPIR-V push-constant block: type nesting not understood");
  }
  const std::span<const uint32_t> ops = type->second;  // ops[0] is the result id
  switch (t.type_opcode.at(id)) {
    case kOpTypeInt:
    case kOpTypeFloat:
      return uint64_t{ops[1]} / 8;
    case kOpTypeVector: {
      UMDEV_ASSIGN_OR_RETURN(const uint64_t component, SizeOfType(t, ops[1], {}, depth + 1));
      return component * ops[2];
    }
    case kOpTypeMatrix: {
      if (member.matrix_stride == 0) break;
      if (!member.row_major) return uint64_t{member.matrix_stride} * ops[2];
      const auto column = t.types.find(ops[1]);
      if (column == t.types.end() || t.type_opcode.at(ops[1]) != kOpTypeVector) break;
      return uint64_t{member.matrix_stride} * column->second[2];
    }
    case kOpTypeArray: {
      const auto length = t.constants.find(ops[2]);
      if (length == t.constants.end()) break;
      uint64_t stride = 0;
      if (auto s = t.array_stride.find(id); s != t.array_stride.end()) {
        stride = s->second;
      } else {
        UMDEV_ASSIGN_OR_RETURN(stride, SizeOfType(t, ops[1], member, depth + 1));
      }
      return stride * length->second;
    }
    case kOpTypeStruct: {
      uint64_t end = 0;
      for (uint32_t i = 1; i < ops.size(); ++i) {
        const auto offset = t.member_offset.find({id, i - 1});
        if (offset == t.member_offset.end()) {
          return Fail(EINVAL, "SPIR-V push-constant block member without an Offset");
        }
        MemberLayout layout;
        if (auto s = t.member_matrix_stride.find({id, i - 1}); s != t.member_matrix_stride.end()) {
          layout.matrix_stride = s->second;
        }
        layout.row_major = t.member_row_major.contains({id, i - 1});
        UMDEV_ASSIGN_OR_RETURN(const uint64_t size, SizeOfType(t, ops[i], layout, depth + 1));
        end = std::max(end, offset->second + size);
      }
      return end;
    }
    case kOpTypePointer:
      if (ops[1] == kStorageClassPhysicalStorageBuffer) return 8;
      break;
    default:
      break;
  }
  return Fail(EINVAL, "SPIR-V push-constant block holds a type that cannot be sized");
}

// The pointee of pointer type |pointer|, or 0.
uint32_t Pointee(const SpirvTables& t, uint32_t pointer, uint32_t* storage_class) {
  const auto type = t.types.find(pointer);
  if (type == t.types.end() || t.type_opcode.at(pointer) != kOpTypePointer) return 0;
  *storage_class = type->second[1];
  return type->second[2];
}

// Collects |operands| of one instruction into |t| (and |out|).
void Record(uint32_t opcode, std::span<const uint32_t> operands, std::string_view entry_point,
            SpirvTables& t, SpirvInterface& out) {
  switch (opcode) {
    case kOpEntryPoint:
      if (operands.size() >= 3 && operands[0] == kExecutionModelGLCompute) {
        // The name is a nul-terminated literal packed into the words after the id.
        const auto name_words = operands.subspan(2);
        const char* name = reinterpret_cast<const char*>(name_words.data());
        const size_t limit = name_words.size_bytes();
        const size_t length = strnlen(name, limit);
        if (length < limit && std::string_view(name, length) == entry_point) {
          out.has_entry_point = true;
        }
      }
      return;
    case kOpTypeInt:
    case kOpTypeFloat:
    case kOpTypeVector:
    case kOpTypeMatrix:
    case kOpTypeArray:
    case kOpTypePointer:
      if (operands.size() < (opcode == kOpTypeInt || opcode == kOpTypeFloat ? 2u : 3u)) return;
      [[fallthrough]];
    case kOpTypeStruct:
      if (operands.empty()) return;
      t.types[operands[0]] = operands;
      t.type_opcode[operands[0]] = opcode;
      return;
    case kOpConstant:
      if (operands.size() >= 3) t.constants[operands[1]] = operands[2];
      return;
    case kOpVariable:
      if (operands.size() >= 3) {
        t.variables.emplace_back(operands[0], operands[2]);
        t.variable_type[operands[1]] = operands[0];
      }
      return;
    case kOpDecorate:
      if (operands.size() < 2) return;
      if (operands[1] == kDecorationBufferBlock) t.buffer_blocks.insert(operands[0]);
      if (operands.size() < 3) return;
      if (operands[1] == kDecorationArrayStride) t.array_stride[operands[0]] = operands[2];
      if (operands[1] == kDecorationDescriptorSet && operands[2] > out.max_descriptor_set) {
        out.max_descriptor_set = operands[2];
      } else if (operands[1] == kDecorationBinding) {
        t.bound_variables.push_back(operands[0]);
        if (operands[2] >= 32) {
          out.binding_out_of_range = true;
        } else {
          out.binding_mask |= 1u << operands[2];
        }
      }
      return;
    case kOpMemberDecorate:
      if (operands.size() < 3) return;
      if (operands[2] == kDecorationRowMajor) t.member_row_major.insert({operands[0], operands[1]});
      if (operands.size() < 4) return;
      if (operands[2] == kDecorationOffset) {
        t.member_offset[{operands[0], operands[1]}] = operands[3];
      }
      if (operands[2] == kDecorationMatrixStride) {
        t.member_matrix_stride[{operands[0], operands[1]}] = operands[3];
      }
      return;
    default:
      return;
  }
}

}  // namespace

Result<SpirvInterface> InspectSpirv(std::span<const uint32_t> words,
                                    std::string_view entry_point) {
  if (words.size() < kHeaderWords || words[0] != kSpirvMagic) {
    return Fail(EINVAL, "not a SPIR-V module (bad magic or truncated header)");
  }
  SpirvInterface out;
  SpirvTables tables;
  size_t at = kHeaderWords;
  while (at < words.size()) {
    const uint32_t word_count = words[at] >> 16;
    const uint32_t opcode = words[at] & 0xffff;
    if (word_count == 0 || word_count > words.size() - at) {
      return Fail(EINVAL, fmt::format("SPIR-V instruction at word {} runs past the module", at));
    }
    Record(opcode, words.subspan(at + 1, word_count - 1), entry_point, tables, out);
    at += word_count;
  }

  for (const uint32_t variable : tables.bound_variables) {
    uint32_t storage_class = 0;
    const auto type = tables.variable_type.find(variable);
    const uint32_t pointee =
        type == tables.variable_type.end() ? 0 : Pointee(tables, type->second, &storage_class);
    const bool storage_buffer =
        pointee != 0 && (storage_class == kStorageClassStorageBuffer ||
                         (storage_class == kStorageClassUniform &&
                          tables.buffer_blocks.contains(pointee)));
    if (!storage_buffer) out.non_storage_buffer_binding = true;
  }
  for (const auto& [pointer, storage_class] : tables.variables) {
    if (storage_class != kStorageClassPushConstant) continue;
    uint32_t pointer_class = 0;
    const uint32_t block = Pointee(tables, pointer, &pointer_class);
    UMDEV_ASSIGN_OR_RETURN(const uint64_t bytes, SizeOfType(tables, block, {}, 0));
    out.push_constant_bytes =
        static_cast<uint32_t>(std::max<uint64_t>(out.push_constant_bytes,
                                                 std::min<uint64_t>(bytes, UINT32_MAX)));
  }
  return out;
}

}  // namespace umdev::vendor::gpu
