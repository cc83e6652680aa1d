// Both engines (Vulkan on llvmpipe, CPU on TBB) through the same Engine and
// Slice interface: zeroed slices, host access, COPY, FILL, the built-in
// vector add and reduction with known results, capacity, and every
// out-of-bounds or malformed command refused without touching memory.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <numeric>
#include <string>

#include <gtest/gtest.h>

#include "gpu_test_util.h"
#include "umdev/common/mapping.h"
#include "umdev/vendor/gpu/builtin_kernels.h"

namespace umdev::vendor::gpu {
namespace {

using testing::kEngineSliceBytes;
using testing::ReadWords;
using testing::WriteWords;

constexpr uint64_t kCapacity = 8 << 20;
constexpr uint32_t kSentinel = 0x5a5a5a5a;

class EngineTest : public ::testing::TestWithParam<EngineKind> {
 protected:
  void SetUp() override {
    if (GetParam() == EngineKind::kCpu) {
      auto engine = CreateCpuEngine({.memory_limit = kCapacity});
      ASSERT_TRUE(engine.has_value()) << engine.error().Describe();
      engine_ = *engine;
    } else {
      const int index = testing::PickTestDevice();
      if (index < 0) GTEST_SKIP() << testing::kNoVulkanMessage;
      auto engine = CreateVulkanEngine(
          {.device_index = static_cast<uint32_t>(index), .memory_limit = kCapacity});
      ASSERT_TRUE(engine.has_value()) << engine.error().Describe();
      engine_ = *engine;
    }
    auto slice = engine_->CreateSlice(kEngineSliceBytes);
    ASSERT_TRUE(slice.has_value()) << slice.error().Describe();
    slice_ = std::move(*slice);
  }

  // Fills the whole slice with kSentinel, so a refused command can be shown
  // to have written nothing.
  void Poison() {
    ASSERT_TRUE(slice_->Fill(0, kEngineSliceBytes, kSentinel).has_value());
  }
  void ExpectPoisoned() {
    const auto words = ReadWords(*slice_, 0, kEngineSliceBytes / 4);
    for (size_t i = 0; i < words.size(); ++i) {
      ASSERT_EQ(words[i], kSentinel) << "word " << i << " changed";
    }
  }
  DispatchCommand Kernel(std::string_view name, uint32_t count, uint32_t groups) {
    const BuiltinKernel* kernel = FindBuiltinKernel(name);
    EXPECT_NE(kernel, nullptr);
    DispatchCommand command;
    command.spirv = kernel->spirv;
    command.entry_point = std::string(name);
    command.push_constants = push_.Count(count);
    command.groups_x = groups;
    return command;
  }
  static void ExpectError(const Result<void>& result, int code) {
    ASSERT_FALSE(result.has_value());
    EXPECT_EQ(result.error().code, code) << result.error().Describe();
  }

  testing::PushConstants push_;
  std::shared_ptr<Engine> engine_;
  std::unique_ptr<Slice> slice_;
};

TEST_P(EngineTest, ReportsKindNameAndCapacity) {
  EXPECT_EQ(engine_->kind(), GetParam());
  EXPECT_FALSE(engine_->name().empty());
  EXPECT_EQ(engine_->memory_capacity(), kCapacity);
  EXPECT_EQ(engine_->memory_allocated(), kEngineSliceBytes);
  EXPECT_EQ(slice_->size(), kEngineSliceBytes);
}

TEST_P(EngineTest, NewSliceIsZeroed) {
  for (uint32_t word : ReadWords(*slice_, 0, kEngineSliceBytes / 4)) ASSERT_EQ(word, 0u);
}

TEST_P(EngineTest, WriteThenReadRoundTrips) {
  WriteWords(*slice_, 100, {1, 2, 3, 0xdeadbeef});
  EXPECT_EQ(ReadWords(*slice_, 100, 4), (std::vector<uint32_t>{1, 2, 3, 0xdeadbeef}));
  // Unaligned host access is allowed: it is the guest's BAR2 path.
  std::byte one{0x7f};
  ASSERT_TRUE(slice_->Write(kEngineSliceBytes - 1, std::span(&one, 1)).has_value());
}

TEST_P(EngineTest, FillWritesThePatternAndNothingElse) {
  ASSERT_TRUE(slice_->Fill(64, 256, 0xcafef00d).has_value());
  const auto words = ReadWords(*slice_, 60, 66);
  EXPECT_EQ(words.front(), 0u);
  EXPECT_EQ(words.back(), 0u);
  for (size_t i = 1; i <= 64; ++i) EXPECT_EQ(words[i], 0xcafef00d) << i;
}

TEST_P(EngineTest, CopyMovesBytesInsideTheSlice) {
  std::vector<uint32_t> data(1000);
  std::iota(data.begin(), data.end(), 7u);
  WriteWords(*slice_, 0, data);
  ASSERT_TRUE(slice_->Copy(32768, 0, data.size() * 4).has_value());
  EXPECT_EQ(ReadWords(*slice_, 32768, data.size()), data);
  // Byte granularity works too.
  ASSERT_TRUE(slice_->Copy(40001, 3, 5).has_value());
}

TEST_P(EngineTest, VectorAddGivesKnownSums) {
  constexpr uint32_t kCount = 1000;  // not a multiple of the workgroup size
  std::vector<uint32_t> a(kCount), b(kCount);
  for (uint32_t i = 0; i < kCount; ++i) {
    a[i] = i;
    b[i] = 3 * i + 7;
  }
  WriteWords(*slice_, 0, a);
  WriteWords(*slice_, 8192, b);
  ASSERT_TRUE(slice_->Fill(16384, 8192, kSentinel).has_value());
  DispatchCommand add = Kernel("umdev_vadd_u32", kCount, (kCount + 63) / 64);
  add.bindings = {{0, 0, 4096}, {1, 8192, 4096}, {2, 16384, 4096}};
  auto result = slice_->Dispatch(add);
  ASSERT_TRUE(result.has_value()) << result.error().Describe();
  const auto c = ReadWords(*slice_, 16384, 2048);
  for (uint32_t i = 0; i < kCount; ++i) ASSERT_EQ(c[i], 4 * i + 7) << i;
  for (uint32_t i = kCount; i < 2048; ++i) ASSERT_EQ(c[i], kSentinel) << i;
}

TEST_P(EngineTest, VectorAddWraps) {
  WriteWords(*slice_, 0, {0xffffffff, 0x80000000});
  WriteWords(*slice_, 64, {2, 0x80000000});
  DispatchCommand add = Kernel("umdev_vadd_u32", 2, 1);
  add.bindings = {{0, 0, 8}, {1, 64, 8}, {2, 128, 8}};
  ASSERT_TRUE(slice_->Dispatch(add).has_value());
  EXPECT_EQ(ReadWords(*slice_, 128, 2), (std::vector<uint32_t>{1, 0}));
}

TEST_P(EngineTest, ReductionGivesTheKnownSum) {
  constexpr uint32_t kCount = 10000;
  std::vector<uint32_t> values(kCount);
  std::iota(values.begin(), values.end(), 0u);
  WriteWords(*slice_, 0, values);
  ASSERT_TRUE(slice_->Fill(65536 - 256, 4, 0).has_value());
  DispatchCommand sum = Kernel("umdev_reduce_sum_u32", kCount, (kCount + 63) / 64);
  sum.bindings = {{0, 0, kCount * 4}, {1, 65536 - 256, 4}};
  auto result = slice_->Dispatch(sum);
  ASSERT_TRUE(result.has_value()) << result.error().Describe();
  EXPECT_EQ(ReadWords(*slice_, 65536 - 256, 1).front(), kCount * (kCount - 1) / 2);
  // The kernel accumulates: a second run doubles the sum.
  ASSERT_TRUE(slice_->Dispatch(sum).has_value());
  EXPECT_EQ(ReadWords(*slice_, 65536 - 256, 1).front(), kCount * (kCount - 1));
}

TEST_P(EngineTest, HostAccessOutsideTheSliceIsEFAULT) {
  std::vector<std::byte> buffer(16);
  ExpectError(slice_->Write(kEngineSliceBytes - 8, buffer), EFAULT);
  ExpectError(slice_->Read(kEngineSliceBytes - 8, buffer), EFAULT);
  ExpectError(slice_->Read(kEngineSliceBytes + 1, std::span(buffer).first(0)), EFAULT);
  ExpectError(slice_->Write(UINT64_MAX - 4, buffer), EFAULT);  // offset + size overflows
}

TEST_P(EngineTest, BadCopiesAreRefusedAndWriteNothing) {
  Poison();
  ExpectError(slice_->Copy(0, kEngineSliceBytes - 4, 8), EFAULT);
  ExpectError(slice_->Copy(kEngineSliceBytes - 4, 0, 8), EFAULT);
  ExpectError(slice_->Copy(0, UINT64_MAX - 3, 8), EFAULT);
  ExpectError(slice_->Copy(16, 0, UINT64_MAX), EFAULT);
  ExpectError(slice_->Copy(16, 0, 32), EINVAL);  // overlap
  ExpectError(slice_->Copy(16, 0, 0), EINVAL);
  ExpectPoisoned();
}

TEST_P(EngineTest, BadFillsAreRefusedAndWriteNothing) {
  Poison();
  ExpectError(slice_->Fill(kEngineSliceBytes - 4, 8, 0), EFAULT);
  ExpectError(slice_->Fill(UINT64_MAX - 3, 8, 0), EFAULT);
  ExpectError(slice_->Fill(2, 8, 0), EINVAL);
  ExpectError(slice_->Fill(0, 6, 0), EINVAL);
  ExpectError(slice_->Fill(0, 0, 0), EINVAL);
  ExpectPoisoned();
}

TEST_P(EngineTest, BadDispatchesAreRefusedAndWriteNothing) {
  Poison();
  const uint32_t count = 64;
  DispatchCommand add = Kernel("umdev_vadd_u32", count, 1);
  auto with = [&](auto change) {
    DispatchCommand c = add;
    c.bindings = {{0, 0, 256}, {1, 256, 256}, {2, 512, 256}};
    change(c);
    return slice_->Dispatch(c);
  };
  ExpectError(with([](auto& c) { c.bindings[2].offset = kEngineSliceBytes - 128; }), EFAULT);
  ExpectError(with([](auto& c) { c.bindings[2].offset = UINT64_MAX - 3; }), EFAULT);
  ExpectError(with([](auto& c) { c.bindings[2].size = UINT64_MAX & ~uint64_t{3}; }), EFAULT);
  ExpectError(with([](auto& c) { c.bindings[2].offset = 514; }), EINVAL);
  ExpectError(with([](auto& c) { c.bindings[2].size = 0; }), EINVAL);
  ExpectError(with([](auto& c) { c.bindings[2].binding = 1; }), EINVAL);  // twice
  ExpectError(with([](auto& c) { c.bindings[2].binding = kMaxBindings; }), EINVAL);
  ExpectError(with([](auto& c) { c.bindings.resize(kMaxBindings + 1, c.bindings[0]); }), EINVAL);
  ExpectError(with([](auto& c) { c.groups_x = 0; }), EINVAL);
  ExpectError(with([](auto& c) { c.groups_z = 0; }), EINVAL);
  ExpectError(with([](auto& c) { c.entry_point.clear(); }), EINVAL);
  static const std::byte big[kMaxPushConstantBytes + 4] = {};
  ExpectError(with([](auto& c) { c.push_constants = big; }), EINVAL);
  ExpectError(with([](auto& c) { c.push_constants = std::span(big).first(3); }), EINVAL);
  ExpectPoisoned();
  // The slice still works after the refusals.
  ASSERT_TRUE(with([](auto&) {}).has_value());
}

TEST_P(EngineTest, SlicesAreAccountedAndIsolated) {
  auto other = engine_->CreateSlice(kEngineSliceBytes);
  ASSERT_TRUE(other.has_value()) << other.error().Describe();
  EXPECT_EQ(engine_->memory_allocated(), 2 * kEngineSliceBytes);
  Poison();
  for (uint32_t word : ReadWords(**other, 0, kEngineSliceBytes / 4)) ASSERT_EQ(word, 0u);
  ASSERT_TRUE((*other)->Fill(0, kEngineSliceBytes, 1).has_value());
  ExpectPoisoned();
  other->reset();
  EXPECT_EQ(engine_->memory_allocated(), kEngineSliceBytes);
}

TEST_P(EngineTest, CapacityIsEnforced) {
  auto too_big = engine_->CreateSlice(kCapacity);  // kEngineSliceBytes are taken already
  ASSERT_FALSE(too_big.has_value());
  EXPECT_EQ(too_big.error().code, ENOSPC);
  auto rest = engine_->CreateSlice(kCapacity - kEngineSliceBytes);
  ASSERT_TRUE(rest.has_value()) << rest.error().Describe();
  auto none_left = engine_->CreateSlice(4);
  ASSERT_FALSE(none_left.has_value());
  EXPECT_EQ(none_left.error().code, ENOSPC);
  EXPECT_EQ(engine_->memory_allocated(), kCapacity);
}

TEST_P(EngineTest, SliceSizesMustBeWordMultiples) {
  for (uint64_t size : {uint64_t{0}, uint64_t{6}}) {
    auto slice = engine_->CreateSlice(size);
    ASSERT_FALSE(slice.has_value());
    EXPECT_EQ(slice.error().code, EINVAL);
  }
}

TEST_P(EngineTest, SliceOutlivesItsEngineObject) {
  engine_.reset();
  ASSERT_TRUE(slice_->Fill(0, 16, 9).has_value());
  EXPECT_EQ(ReadWords(*slice_, 0, 4), (std::vector<uint32_t>{9, 9, 9, 9}));
}

// What BAR2 relies on: a client mapping the slice's fd sees the engine's
// writes, and the engine sees the client's stores, with no copy between.
TEST_P(EngineTest, MemoryIsSharedThroughItsFd) {
  const int fd = slice_->memory_fd();
  if (fd < 0) GTEST_SKIP() << "the Vulkan driver cannot import host memory";
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  ASSERT_GE(static_cast<uint64_t>(st.st_size), kEngineSliceBytes);
  // A client's mapping can never be cut short under it (SIGBUS).
  EXPECT_NE(fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK, 0);
  EXPECT_NE(ftruncate(fd, 0), 0);
  auto client = Mapping::Map(fd, 0, kEngineSliceBytes, PROT_READ | PROT_WRITE, MAP_SHARED);
  ASSERT_TRUE(client.has_value()) << client.error().Describe();
  auto* words = reinterpret_cast<uint32_t*>(client->data());

  ASSERT_TRUE(slice_->Fill(0, 256, 0xabcd0123).has_value());
  EXPECT_EQ(words[0], 0xabcd0123u);
  EXPECT_EQ(words[63], 0xabcd0123u);
  EXPECT_EQ(words[64], 0u);

  for (uint32_t i = 0; i < 64; ++i) {
    words[1024 + i] = i;       // a
    words[2048 + i] = 100 * i;  // b
  }
  DispatchCommand add = Kernel("umdev_vadd_u32", 64, 1);
  add.bindings = {{0, 4096, 256}, {1, 8192, 256}, {2, 12288, 256}};
  ASSERT_TRUE(slice_->Dispatch(add).has_value());
  for (uint32_t i = 0; i < 64; ++i) ASSERT_EQ(words[3072 + i], 101 * i) << i;
  EXPECT_EQ(ReadWords(*slice_, 12288 + 4 * 63, 1).front(), 101u * 63);
}

INSTANTIATE_TEST_SUITE_P(Engines, EngineTest,
                         ::testing::Values(EngineKind::kVulkan, EngineKind::kCpu),
                         [](const auto& param_info) {
                           return param_info.param == EngineKind::kVulkan ? std::string("Vulkan")
                                                                    : std::string("Cpu");
                         });

}  // namespace
}  // namespace umdev::vendor::gpu
