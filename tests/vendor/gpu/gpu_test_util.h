// Helpers shared by the vendor/gpu tests: picking llvmpipe, typed slice access.
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "umdev/vendor/gpu/accelerator.h"
#include "umdev/vendor/gpu/engine.h"

namespace umdev::vendor::gpu::testing {

// The slice the engine tests create: room for a few buffers of test data.
inline constexpr uint64_t kEngineSliceBytes = 64 << 10;
inline constexpr uint64_t kMiB = uint64_t{1} << 20;

// The loader index of Mesa's llvmpipe (what CI computes on), or of the first
// device when there is no llvmpipe; -1 when the loader offers no device.
inline int PickTestDevice() {
  auto accelerators = DiscoverAccelerators();
  if (!accelerators.has_value() || accelerators->empty()) return -1;
  for (const Accelerator& a : *accelerators) {
    if (a.name.find("llvmpipe") != std::string::npos) return static_cast<int>(a.index);
  }
  return static_cast<int>(accelerators->front().index);
}

inline constexpr const char* kNoVulkanMessage =
    "no Vulkan device: install mesa-vulkan-drivers (llvmpipe) or a GPU driver";

inline std::vector<uint32_t> ReadWords(Slice& slice, uint64_t offset, size_t count) {
  std::vector<uint32_t> words(count);
  auto read = slice.Read(offset, std::as_writable_bytes(std::span(words)));
  EXPECT_TRUE(read.has_value()) << read.error().Describe();
  return words;
}

inline void WriteWords(Slice& slice, uint64_t offset, const std::vector<uint32_t>& words) {
  auto written = slice.Write(offset, std::as_bytes(std::span(words)));
  ASSERT_TRUE(written.has_value()) << written.error().Describe();
}

// Keeps the push-constant words of the commands a test builds alive for the
// test's lifetime (DispatchCommand only refers to them). Thread-compatible.
class PushConstants {
 public:
  std::span<const std::byte> Count(uint32_t count) {
    words_.push_back(count);  // a deque never moves its elements
    return std::as_bytes(std::span(&words_.back(), 1));
  }

 private:
  std::deque<uint32_t> words_;
};

}  // namespace umdev::vendor::gpu::testing
