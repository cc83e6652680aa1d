// The Vulkan engine validates SPIR-V before the driver sees it: modules that
// pass the structural inspection but fail SPIRV-Tools' validator, bind a
// uniform buffer where the engine binds storage buffers, or declare a
// push-constant block larger than the bytes given are refused with EINVAL
// and leave the slice untouched; valid modules still run.
#include <cerrno>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "gpu_test_util.h"
#include "vulkan_test_kernels.h"

namespace umdev::vendor::gpu {
namespace {

using testing::kEngineSliceBytes;
using testing::ReadWords;
using testing::RunCheckedVectorAdd;
using testing::WriteWords;

constexpr uint32_t kPattern = 0xc0ffee00u;
constexpr uint32_t kOpTypeVoid = 19;
constexpr uint32_t kOpIAdd = 128;

// The word index of the first instruction with |opcode|, or 0.
size_t FindInstruction(const std::vector<uint32_t>& words, uint32_t opcode) {
  for (size_t at = 5; at < words.size(); at += words[at] >> 16) {
    if ((words[at] & 0xffff) == opcode) return at;
    if ((words[at] >> 16) == 0) break;
  }
  return 0;
}

class VulkanValidationTest : public ::testing::Test {
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
    WriteWords(*slice_, 0, std::vector<uint32_t>(kEngineSliceBytes / 4, kPattern));
  }

  // Refused with EINVAL, |context_part| in the context, the slice untouched.
  void ExpectRefused(const DispatchCommand& command, const char* context_part) {
    auto result = slice_->Dispatch(command);
    ASSERT_FALSE(result.has_value());
    EXPECT_EQ(result.error().code, EINVAL) << result.error().Describe();
    EXPECT_NE(result.error().context.find(context_part), std::string::npos)
        << result.error().context;
    EXPECT_EQ(ReadWords(*slice_, 0, kEngineSliceBytes / 4),
              std::vector<uint32_t>(kEngineSliceBytes / 4, kPattern));
  }

  testing::PushConstants push_;
  std::shared_ptr<Engine> engine_;
  std::unique_ptr<Slice> slice_;
};

TEST_F(VulkanValidationTest, ModulesFailingTheValidatorAreRefused) {
  DispatchCommand command = testing::VectorAddAt(push_, 0x1000, 64);
  const std::vector<uint32_t> words(command.spirv.begin(), command.spirv.end());
  const size_t add = FindInstruction(words, kOpIAdd);
  const size_t void_type = FindInstruction(words, kOpTypeVoid);
  ASSERT_NE(add, 0u);
  ASSERT_NE(void_type, 0u);

  // A type mismatch: the integer add declared to produce void.
  std::vector<uint32_t> void_add = words;
  void_add[add + 1] = words[void_type + 1];
  command.spirv = void_add;
  ExpectRefused(command, "fails validation");

  // An operand naming an id at the module's id bound (never defined).
  std::vector<uint32_t> undefined = words;
  undefined[add + 3] = words[3];
  command.spirv = undefined;
  ExpectRefused(command, "fails validation");

  // The same verdict again (from the validator's cache).
  command.spirv = void_add;
  ExpectRefused(command, "fails validation");
}

TEST_F(VulkanValidationTest, UniformBufferWhereAStorageBufferIsBoundIsRefused) {
  DispatchCommand command;
  command.spirv = std::span<const uint32_t>(test_uniform_binding);
  command.entry_point = "main";
  command.bindings = {{0, 0x1000, 256}, {1, 0x2000, 256}};
  ExpectRefused(command, "storage buffer");
}

TEST_F(VulkanValidationTest, PushConstantBlockLargerThanTheBytesGivenIsRefused) {
  const std::vector<uint32_t> params = {1, 2, 3, 4, 5, 6, 7, 0xabcdef01u};
  DispatchCommand command;
  command.spirv = std::span<const uint32_t>(test_push_block_32);
  command.entry_point = "main";
  command.bindings = {{0, 0x1000, 256}};
  command.push_constants = std::as_bytes(std::span(params).first(4));
  ExpectRefused(command, "push-constant block is 32 bytes");
  command.push_constants = {};
  ExpectRefused(command, "push-constant block is 32 bytes");

  // The built-in vector add declares a 4-byte block.
  DispatchCommand vadd = testing::VectorAddAt(push_, 0x1000, 64);
  vadd.push_constants = {};
  ExpectRefused(vadd, "push-constant block is 4 bytes");

  // All 32 bytes: the kernel reads the last word.
  command.push_constants = std::as_bytes(std::span(params));
  auto result = slice_->Dispatch(command);
  ASSERT_TRUE(result.has_value()) << result.error().Describe();
  EXPECT_EQ(ReadWords(*slice_, 0x1000, 2), (std::vector<uint32_t>{0xabcdef01u, kPattern}));
}

TEST_F(VulkanValidationTest, ValidModulesStillRun) {
  for (uint32_t round = 0; round < 3; ++round) {  // later rounds hit the cache
    auto result = RunCheckedVectorAdd(*slice_, 0x1000, round * 1000);
    ASSERT_TRUE(result.has_value()) << result.error().Describe();
  }
  EXPECT_EQ(ReadWords(*slice_, 0x4000, 16), std::vector<uint32_t>(16, kPattern));
}

}  // namespace
}  // namespace umdev::vendor::gpu
