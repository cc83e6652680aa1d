// What only the Vulkan engine does: it refuses SPIR-V that does not match the
// dispatch before the driver sees it, a kernel indexing past its bindings
// cannot reach another slice, and slices run from several threads at once.
#include <cerrno>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "gpu_test_util.h"
#include "umdev/vendor/gpu/builtin_kernels.h"

namespace umdev::vendor::gpu {
namespace {

using testing::kEngineSliceBytes;
using testing::ReadWords;
using testing::WriteWords;


class VulkanEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const int index = testing::PickTestDevice();
    if (index < 0) GTEST_SKIP() << testing::kNoVulkanMessage;
    auto engine = CreateVulkanEngine({.device_index = static_cast<uint32_t>(index)});
    ASSERT_TRUE(engine.has_value()) << engine.error().Describe();
    engine_ = *engine;
    auto slice = engine_->CreateSlice(kEngineSliceBytes);
    ASSERT_TRUE(slice.has_value()) << slice.error().Describe();
    slice_ = std::move(*slice);
  }

  DispatchCommand VectorAdd(uint32_t count) {
    const BuiltinKernel* kernel = FindBuiltinKernel("umdev_vadd_u32");
    DispatchCommand command;
    command.spirv = kernel->spirv;
    command.entry_point = "umdev_vadd_u32";
    command.push_constants = push_.Count(count);
    command.groups_x = (count + 63) / 64;
    command.bindings = {{0, 0, 1024}, {1, 1024, 1024}, {2, 2048, 1024}};
    return command;
  }
  void ExpectEinval(const DispatchCommand& command) {
    auto result = slice_->Dispatch(command);
    ASSERT_FALSE(result.has_value());
    EXPECT_EQ(result.error().code, EINVAL) << result.error().Describe();
  }

  testing::PushConstants push_;
  std::shared_ptr<Engine> engine_;
  std::unique_ptr<Slice> slice_;
};

TEST_F(VulkanEngineTest, UsesTheWholeHeapByDefault) {
  EXPECT_GT(engine_->memory_capacity(), kEngineSliceBytes);
  EXPECT_EQ(engine_->kind(), EngineKind::kVulkan);
}

TEST_F(VulkanEngineTest, RefusesModulesThatAreNotSpirv) {
  DispatchCommand command = VectorAdd(16);
  const std::vector<uint32_t> words(command.spirv.begin(), command.spirv.end());

  std::vector<uint32_t> bad_magic = words;
  bad_magic[0] = 0x12345678;
  command.spirv = bad_magic;
  ExpectEinval(command);

  command.spirv = std::span(words).first(3);  // truncated header
  ExpectEinval(command);

  command.spirv = {};
  ExpectEinval(command);

  std::vector<uint32_t> overlong = words;
  overlong.push_back(0xffff0001);  // an instruction claiming 65535 words
  command.spirv = overlong;
  ExpectEinval(command);
}

TEST_F(VulkanEngineTest, RefusesAnEntryPointTheModuleLacks) {
  DispatchCommand command = VectorAdd(16);
  command.entry_point = "main";
  ExpectEinval(command);
  command.entry_point = "umdev_vadd_u32_and_more";
  ExpectEinval(command);
}

TEST_F(VulkanEngineTest, RefusesAModuleUsingBindingsTheDispatchDoesNotProvide) {
  DispatchCommand command = VectorAdd(16);
  command.bindings.pop_back();  // the shader writes binding 2
  ExpectEinval(command);
}

TEST_F(VulkanEngineTest, RefusesOffsetsBelowTheDeviceAlignment) {
  DispatchCommand command = VectorAdd(16);
  command.bindings[0].offset = 4;  // word-aligned, below any storage alignment but 4
  auto result = slice_->Dispatch(command);
  if (result.has_value()) GTEST_SKIP() << "device aligns storage buffers to 4 bytes";
  EXPECT_EQ(result.error().code, EINVAL);
}

TEST_F(VulkanEngineTest, KernelIndexingPastItsBindingCannotReachAnotherSlice) {
  auto other = engine_->CreateSlice(kEngineSliceBytes);
  ASSERT_TRUE(other.has_value()) << other.error().Describe();
  ASSERT_TRUE((*other)->Fill(0, kEngineSliceBytes, 0x77777777).has_value());
  // count far beyond the 1 KiB bindings: robust buffer access keeps the
  // stray loads and stores inside this slice's own buffer.
  const uint32_t count = 64 * 1024;
  DispatchCommand command = VectorAdd(count);
  command.groups_x = count / 64;
  ASSERT_TRUE(slice_->Dispatch(command).has_value());
  for (uint32_t word : ReadWords(**other, 0, kEngineSliceBytes / 4)) ASSERT_EQ(word, 0x77777777u);
}

TEST_F(VulkanEngineTest, SlicesRunFromSeveralThreadsAtOnce) {
  constexpr int kThreads = 3;
  constexpr uint32_t kCount = 256;
  const DispatchCommand add = VectorAdd(kCount);  // built before the threads share it
  std::vector<std::unique_ptr<Slice>> slices;
  for (int t = 0; t < kThreads; ++t) {
    auto slice = engine_->CreateSlice(kEngineSliceBytes);
    ASSERT_TRUE(slice.has_value()) << slice.error().Describe();
    slices.push_back(std::move(*slice));
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Slice& slice = *slices[t];
      for (int round = 0; round < 5; ++round) {
        const uint32_t base = static_cast<uint32_t>(t * 1000 + round);
        EXPECT_TRUE(slice.Fill(0, 1024, base).has_value());
        EXPECT_TRUE(slice.Fill(1024, 1024, 1).has_value());
        EXPECT_TRUE(slice.Dispatch(add).has_value());
        const auto c = ReadWords(slice, 2048, kCount);
        for (uint32_t v : c) EXPECT_EQ(v, base + 1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
}

}  // namespace
}  // namespace umdev::vendor::gpu

namespace umdev::vendor::gpu {
namespace {

using testing::kEngineSliceBytes;
using testing::ReadWords;

// The slice's pipeline cache: a module run again (with other data, other
// offsets, other push constants) still computes the right thing; the same
// module under another entry point or with fewer bindings than it uses is
// still checked and refused; more modules than the cache holds evict the
// oldest without harm.
class VulkanPipelineCacheTest : public VulkanEngineTest {};

TEST_F(VulkanPipelineCacheTest, ARepeatedModuleComputesWithEachCommandsData) {
  for (uint32_t round = 0; round < 8; ++round) {
    DispatchCommand add = VectorAdd(64 + round * 16);
    // Each round at other offsets: the descriptor set is the command's own.
    const uint64_t base = round * 4096;
    add.bindings = {{0, base, 1024}, {1, base + 1024, 1024}, {2, base + 2048, 1024}};
    ASSERT_TRUE(slice_->Fill(base, 1024, round).has_value());
    ASSERT_TRUE(slice_->Fill(base + 1024, 1024, 100).has_value());
    ASSERT_TRUE(slice_->Fill(base + 2048, 1024, 0).has_value());
    ASSERT_TRUE(slice_->Dispatch(add).has_value());
    const auto sums = ReadWords(*slice_, base + 2048, 256);
    for (size_t i = 0; i < sums.size(); ++i) {
      ASSERT_EQ(sums[i], i < 64 + round * 16 ? round + 100 : 0u) << "round " << round << " word " << i;
    }
  }
}

TEST_F(VulkanPipelineCacheTest, AModuleThatRanIsStillCheckedUnderOtherBindingsOrEntryPoints) {
  ASSERT_TRUE(slice_->Dispatch(VectorAdd(16)).has_value());
  DispatchCommand renamed = VectorAdd(16);
  renamed.entry_point = "not_there";
  ExpectEinval(renamed);
  DispatchCommand fewer = VectorAdd(16);
  fewer.bindings.pop_back();  // The module writes binding 2.
  ExpectEinval(fewer);
  ASSERT_TRUE(slice_->Dispatch(VectorAdd(16)).has_value());
}

TEST_F(VulkanPipelineCacheTest, MoreModulesThanTheCacheHoldsEvictTheOldest) {
  const DispatchCommand original = VectorAdd(64);
  const std::vector<uint32_t> words(original.spirv.begin(), original.spirv.end());
  // The header's generator word changes the bytes, not the meaning.
  std::vector<std::vector<uint32_t>> variants;
  for (uint32_t i = 0; i < 20; ++i) {
    variants.push_back(words);
    variants.back()[2] = 0x00080000u + i;
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& variant : variants) {
      DispatchCommand add = VectorAdd(64);
      add.spirv = variant;
      ASSERT_TRUE(slice_->Fill(0, 1024, 5).has_value());
      ASSERT_TRUE(slice_->Fill(1024, 1024, 6).has_value());
      ASSERT_TRUE(slice_->Dispatch(add).has_value());
      ASSERT_EQ(ReadWords(*slice_, 2048, 1).at(0), 11u);
    }
  }
}

}  // namespace
}  // namespace umdev::vendor::gpu
