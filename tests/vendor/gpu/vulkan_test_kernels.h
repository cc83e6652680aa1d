// The test-only compute kernels (tests/vendor/gpu/shaders, compiled at build
// time) and commands over them and the built-in vector add, shared by the
// Vulkan engine's validation and watchdog tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "gpu_test_util.h"
#include "umdev/vendor/gpu/builtin_kernels.h"
#include "umdev/vendor/gpu/engine.h"

// NOLINTBEGIN: generated arrays of SPIR-V words.
#include "test_spirv/push_block_32.h"
#include "test_spirv/spin_until_flag.h"
#include "test_spirv/uniform_binding.h"
// NOLINTEND

namespace umdev::vendor::gpu::testing {

// The dispatch timeout of the watchdog tests. llvmpipe JIT-compiles a kernel
// on its first dispatch inside the submission, so the fence wait covers the
// compile too; under a sanitizer, with the abandoned grid still draining on
// the same CPUs, that can pass 200 ms. Nothing asserts on elapsed time.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr std::chrono::milliseconds kTestDispatchTimeout{2000};
#else
inline constexpr std::chrono::milliseconds kTestDispatchTimeout{200};
#endif

// Spins until word 0 of [offset, +16) is non-zero, counting in word 1. On a
// GPU one invocation never ends. llvmpipe ends every invocation's loops
// after 65535 iterations (gallivm's loop limiter), so the grid is large:
// 2^22 groups of 65535 iterations, days of work on llvmpipe.
inline DispatchCommand SpinForever(uint64_t offset) {
  DispatchCommand command;
  command.spirv = std::span<const uint32_t>(test_spin_until_flag);
  command.entry_point = "main";
  command.bindings = {{0, offset, 16}};
  command.groups_x = 65535;
  command.groups_y = 64;
  return command;
}

// Sets SpinForever's flag once its dispatch has been abandoned: on llvmpipe
// the rest of the grid then drains in seconds instead of burning every CPU
// of the test process for days (slowing the commands the test checks).
inline void ReleaseSpin(Slice& slice, uint64_t offset) {
  WriteWords(slice, offset, {1});
}

// c = a + b over |count| words: a at |base|, b at base + 0x400, c at
// base + 0x800 (each 1 KiB, so count <= 256).
inline DispatchCommand VectorAddAt(PushConstants& push, uint64_t base, uint32_t count) {
  const BuiltinKernel* kernel = FindBuiltinKernel("umdev_vadd_u32");
  DispatchCommand command;
  command.spirv = kernel->spirv;
  command.entry_point = "umdev_vadd_u32";
  command.push_constants = push.Count(count);
  command.groups_x = (count + 63) / 64;
  command.bindings = {{0, base, 1024}, {1, base + 0x400, 1024}, {2, base + 0x800, 1024}};
  return command;
}

// Fills a and b of VectorAddAt(base), dispatches it on |slice| and checks
// every word of c. Returns the dispatch's result.
inline Result<void> RunCheckedVectorAdd(Slice& slice, uint64_t base, uint32_t seed) {
  constexpr uint32_t kCount = 256;
  std::vector<uint32_t> a(kCount), b(kCount);
  for (uint32_t i = 0; i < kCount; ++i) {
    a[i] = seed + i;
    b[i] = 0xfffff000u + 7 * i;  // wraps for large i
  }
  WriteWords(slice, base, a);
  WriteWords(slice, base + 0x400, b);
  WriteWords(slice, base + 0x800, std::vector<uint32_t>(kCount, 0));
  PushConstants push;
  Result<void> result = slice.Dispatch(VectorAddAt(push, base, kCount));
  if (!result.has_value()) return result;
  const auto c = ReadWords(slice, base + 0x800, kCount);
  for (uint32_t i = 0; i < kCount; ++i) EXPECT_EQ(c[i], a[i] + b[i]) << "word " << i;
  return result;
}

}  // namespace umdev::vendor::gpu::testing
