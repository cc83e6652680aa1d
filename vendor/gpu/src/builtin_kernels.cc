#include "umdev/vendor/gpu/builtin_kernels.h"

#include <cstdint>

#include "spirv/reduce_sum_u32.h"
#include "spirv/vadd_u32.h"

namespace umdev::vendor::gpu {
namespace {

const BuiltinKernel kKernels[] = {
    {.name = "umdev_vadd_u32",
     .spirv = umdev_spirv_vadd_u32,
     .local_size_x = 64,
     .binding_count = 3,
     .push_constant_bytes = 4},
    {.name = "umdev_reduce_sum_u32",
     .spirv = umdev_spirv_reduce_sum_u32,
     .local_size_x = 64,
     .binding_count = 2,
     .push_constant_bytes = 4},
};

}  // namespace

std::span<const BuiltinKernel> BuiltinKernels() { return kKernels; }

const BuiltinKernel* FindBuiltinKernel(std::string_view name) {
  for (const BuiltinKernel& kernel : kKernels) {
    if (kernel.name == name) return &kernel;
  }
  return nullptr;
}

}  // namespace umdev::vendor::gpu
