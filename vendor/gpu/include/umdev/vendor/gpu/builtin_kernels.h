// The built-in compute kernels: SPIR-V compiled from vendor/gpu/shaders at
// build time, and the CPU engine's native versions of the same kernels.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace umdev::vendor::gpu {

struct BuiltinKernel {
  std::string_view name;  // also the SPIR-V entry point
  std::span<const uint32_t> spirv;
  uint32_t local_size_x;  // invocations per workgroup in x
  uint32_t binding_count;
  uint32_t push_constant_bytes;
};

// umdev_vadd_u32 and umdev_reduce_sum_u32; see the .comp files for their
// bindings and push constants.
std::span<const BuiltinKernel> BuiltinKernels();
// nullptr when there is no kernel of that name.
const BuiltinKernel* FindBuiltinKernel(std::string_view name);

}  // namespace umdev::vendor::gpu
