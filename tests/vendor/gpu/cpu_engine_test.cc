// What only the CPU engine does: it runs built-in kernels by entry-point name
// instead of SPIR-V, and checks each binding holds the elements it touches.
#include <cerrno>

#include <gtest/gtest.h>

#include "gpu_test_util.h"
#include "umdev/vendor/gpu/builtin_kernels.h"

namespace umdev::vendor::gpu {
namespace {

using testing::ReadWords;
using testing::WriteWords;

class CpuEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto engine = CreateCpuEngine({.memory_limit = 1 << 20});
    ASSERT_TRUE(engine.has_value()) << engine.error().Describe();
    engine_ = *engine;
    auto slice = engine_->CreateSlice(64 << 10);
    ASSERT_TRUE(slice.has_value()) << slice.error().Describe();
    slice_ = std::move(*slice);
  }
  DispatchCommand Command(std::string name, uint32_t count, uint32_t groups) {
    DispatchCommand command;
    command.entry_point = std::move(name);
    command.push_constants = push_.Count(count);
    command.groups_x = groups;
    return command;
  }
  void ExpectError(const DispatchCommand& command, int code) {
    auto result = slice_->Dispatch(command);
    ASSERT_FALSE(result.has_value());
    EXPECT_EQ(result.error().code, code) << result.error().Describe();
  }

  testing::PushConstants push_;
  std::shared_ptr<Engine> engine_;
  std::unique_ptr<Slice> slice_;
};

TEST_F(CpuEngineTest, NeedsSomeMemory) {
  auto engine = CreateCpuEngine({.memory_limit = 0});
  ASSERT_FALSE(engine.has_value());
  EXPECT_EQ(engine.error().code, EINVAL);
}

TEST_F(CpuEngineTest, RunsBuiltinsWithoutSpirv) {
  WriteWords(*slice_, 0, {1, 2, 3});
  WriteWords(*slice_, 64, {10, 20, 30});
  DispatchCommand add = Command("umdev_vadd_u32", 3, 1);
  add.bindings = {{0, 0, 12}, {1, 64, 12}, {2, 128, 12}};
  ASSERT_TRUE(slice_->Dispatch(add).has_value());
  EXPECT_EQ(ReadWords(*slice_, 128, 3), (std::vector<uint32_t>{11, 22, 33}));
}

TEST_F(CpuEngineTest, UnknownKernelIsENOTSUP) {
  ExpectError(Command("my_own_kernel", 1, 1), ENOTSUP);
}

TEST_F(CpuEngineTest, MissingBindingOrPushConstantIsEINVAL) {
  DispatchCommand add = Command("umdev_vadd_u32", 3, 1);
  add.bindings = {{0, 0, 12}, {1, 64, 12}};
  ExpectError(add, EINVAL);
  DispatchCommand no_count = Command("umdev_vadd_u32", 3, 1);
  no_count.push_constants = {};
  no_count.bindings = {{0, 0, 12}, {1, 64, 12}, {2, 128, 12}};
  ExpectError(no_count, EINVAL);
}

TEST_F(CpuEngineTest, BindingSmallerThanTheWorkIsEFAULT) {
  DispatchCommand add = Command("umdev_vadd_u32", 16, 1);
  add.bindings = {{0, 0, 64}, {1, 64, 64}, {2, 128, 32}};
  ExpectError(add, EFAULT);
  DispatchCommand sum = Command("umdev_reduce_sum_u32", 16, 1);
  sum.bindings = {{0, 0, 32}, {1, 256, 4}};
  ExpectError(sum, EFAULT);
}

TEST_F(CpuEngineTest, RunsOnlyTheInvocationsTheGroupsCover) {
  // count 100 but one 64-wide group: like a GPU, only elements 0..63 run.
  std::vector<uint32_t> ones(100, 1);
  WriteWords(*slice_, 0, ones);
  DispatchCommand sum = Command("umdev_reduce_sum_u32", 100, 1);
  sum.bindings = {{0, 0, 400}, {1, 1024, 4}};
  ASSERT_TRUE(slice_->Dispatch(sum).has_value());
  EXPECT_EQ(ReadWords(*slice_, 1024, 1).front(), 64u);
  // Each (y, z) group runs the x range again, and the sum accumulates.
  sum.groups_x = 2;
  sum.groups_y = 3;
  ASSERT_TRUE(slice_->Fill(1024, 4, 0).has_value());
  ASSERT_TRUE(slice_->Dispatch(sum).has_value());
  EXPECT_EQ(ReadWords(*slice_, 1024, 1).front(), 300u);
}

TEST_F(CpuEngineTest, ListsTheBuiltinKernels) {
  ASSERT_EQ(BuiltinKernels().size(), 2u);
  for (const BuiltinKernel& kernel : BuiltinKernels()) {
    EXPECT_EQ(FindBuiltinKernel(kernel.name), &kernel);
    ASSERT_FALSE(kernel.spirv.empty());
    EXPECT_EQ(kernel.spirv.front(), 0x07230203u);  // compiled at build time
  }
  EXPECT_EQ(FindBuiltinKernel("nope"), nullptr);
}

}  // namespace
}  // namespace umdev::vendor::gpu
