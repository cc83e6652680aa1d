// The Vulkan engine's dispatch watchdog: a kernel that never ends fails with
// ETIMEDOUT, the engine abandons its device for a fresh one, and every slice
// (the runaway's own included) keeps its memory and keeps working; past
// max_device_resets the engine is wedged and fails every command with EIO.
#include <cerrno>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "gpu_test_util.h"
#include "vulkan_test_kernels.h"

namespace umdev::vendor::gpu {
namespace {

using testing::kEngineSliceBytes;
using testing::ReadWords;
using testing::RunCheckedVectorAdd;
using testing::SpinForever;
using testing::WriteWords;

constexpr uint64_t kSpinState = 0;      // the runaway's {flag, counter}
constexpr uint64_t kVectorAdd = 0x1000;  // a, b, c of the vector adds
constexpr uint64_t kKept = 0x8000;       // a pattern nothing overwrites

class VulkanWatchdogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    index_ = testing::PickTestDevice();
    if (index_ < 0) GTEST_SKIP() << testing::kNoVulkanMessage;
  }

  std::shared_ptr<Engine> MakeEngine(uint32_t max_resets = 8) {
    auto engine = CreateVulkanEngine({.device_index = static_cast<uint32_t>(index_),
                                      .dispatch_timeout = testing::kTestDispatchTimeout,
                                      .max_device_resets = max_resets});
    EXPECT_TRUE(engine.has_value()) << engine.error().Describe();
    return engine.value_or(nullptr);
  }
  static std::unique_ptr<Slice> MakeSlice(Engine& engine, uint32_t pattern) {
    auto slice = engine.CreateSlice(kEngineSliceBytes);
    EXPECT_TRUE(slice.has_value()) << slice.error().Describe();
    if (!slice.has_value()) return nullptr;
    WriteWords(**slice, kKept, std::vector<uint32_t>(1024, pattern));
    return std::move(*slice);
  }
  // Dispatches the runaway (its flag cleared first) and checks it timed out.
  static void ExpectTimedOut(Slice& slice) {
    WriteWords(slice, kSpinState, {0, 0});
    auto result = slice.Dispatch(testing::SpinForever(kSpinState));
    testing::ReleaseSpin(slice, kSpinState);
    ASSERT_FALSE(result.has_value());
    EXPECT_EQ(result.error().code, ETIMEDOUT) << result.error().Describe();
    EXPECT_NE(result.error().context.find("timeout"), std::string::npos)
        << result.error().context;
  }
  static void ExpectKept(Slice& slice, uint32_t pattern) {
    EXPECT_EQ(ReadWords(slice, kKept, 1024), std::vector<uint32_t>(1024, pattern));
  }

  int index_ = -1;
};

TEST_F(VulkanWatchdogTest, RunawayKernelTimesOutAndEverySliceKeepsWorking) {
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  auto runaway = MakeSlice(*engine, 0x11111111u);
  auto other = MakeSlice(*engine, 0x22222222u);
  ASSERT_TRUE(runaway && other);
  ASSERT_TRUE(RunCheckedVectorAdd(*other, kVectorAdd, 1).has_value());
  EXPECT_EQ(engine->device_resets(), 0u);

  ExpectTimedOut(*runaway);
  EXPECT_EQ(engine->device_resets(), 1u);
  // The kernel did run (it counted) before it was abandoned.
  EXPECT_NE(ReadWords(*runaway, kSpinState + 4, 1)[0], 0u);

  // The other slice first (its buffer moves to the fresh device), then the
  // runaway's own slice.
  auto other_add = RunCheckedVectorAdd(*other, kVectorAdd, 100);
  ASSERT_TRUE(other_add.has_value()) << other_add.error().Describe();
  auto own_add = RunCheckedVectorAdd(*runaway, kVectorAdd, 200);
  ASSERT_TRUE(own_add.has_value()) << own_add.error().Describe();
  ExpectKept(*other, 0x22222222u);
  ExpectKept(*runaway, 0x11111111u);
  // COPY and FILL run on the fresh device too.
  ASSERT_TRUE(other->Fill(0x4000, 64, 0x5a5a5a5au).has_value());
  ASSERT_TRUE(other->Copy(0x5000, 0x4000, 64).has_value());
  EXPECT_EQ(ReadWords(*other, 0x5000, 16), std::vector<uint32_t>(16, 0x5a5a5a5au));
  EXPECT_EQ(engine->device_resets(), 1u);
}

TEST_F(VulkanWatchdogTest, SlicesCreatedAfterAResetWorkAndOldOnesCanBeDestroyed) {
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  auto runaway = MakeSlice(*engine, 0x33333333u);
  auto idle = MakeSlice(*engine, 0x44444444u);
  ASSERT_TRUE(runaway && idle);
  ExpectTimedOut(*runaway);
  // Destroying slices whose memory lives on the abandoned device (one of
  // them still being written by the runaway kernel) must not crash.
  idle.reset();
  runaway.reset();
  EXPECT_EQ(engine->memory_allocated(), 0u);
  auto fresh = MakeSlice(*engine, 0x55555555u);
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(ReadWords(*fresh, 0, 16), std::vector<uint32_t>(16, 0u));
  auto add = RunCheckedVectorAdd(*fresh, kVectorAdd, 7);
  ASSERT_TRUE(add.has_value()) << add.error().Describe();
}

TEST_F(VulkanWatchdogTest, EachRunawayIsTimedOutOnItsOwn) {
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  auto slice = MakeSlice(*engine, 0x66666666u);
  ASSERT_NE(slice, nullptr);
  for (uint64_t round = 1; round <= 2; ++round) {
    ExpectTimedOut(*slice);
    EXPECT_EQ(engine->device_resets(), round);
    auto add = RunCheckedVectorAdd(*slice, kVectorAdd, static_cast<uint32_t>(round));
    ASSERT_TRUE(add.has_value()) << add.error().Describe();
  }
  ExpectKept(*slice, 0x66666666u);
}

TEST_F(VulkanWatchdogTest, PastMaxResetsTheEngineIsWedged) {
  auto engine = MakeEngine(/*max_resets=*/1);
  ASSERT_NE(engine, nullptr);
  auto slice = MakeSlice(*engine, 0x77777777u);
  ASSERT_NE(slice, nullptr);
  ExpectTimedOut(*slice);
  ASSERT_TRUE(RunCheckedVectorAdd(*slice, kVectorAdd, 3).has_value());
  ExpectTimedOut(*slice);  // the second reset is refused: the engine is wedged
  EXPECT_EQ(engine->device_resets(), 1u);

  for (auto result : {RunCheckedVectorAdd(*slice, kVectorAdd, 4), slice->Fill(0, 64, 1),
                      slice->Copy(0x100, 0, 64)}) {
    ASSERT_FALSE(result.has_value());
    EXPECT_EQ(result.error().code, EIO) << result.error().Describe();
  }
  auto another = engine->CreateSlice(kEngineSliceBytes);
  ASSERT_FALSE(another.has_value());
  EXPECT_EQ(another.error().code, EIO);
  // Host access to the memory still works: the guest can save its data.
  ExpectKept(*slice, 0x77777777u);
}

TEST_F(VulkanWatchdogTest, ThreadsOnOtherSlicesSurviveARunaway) {
  auto engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  auto runaway = MakeSlice(*engine, 0x88888888u);
  ASSERT_NE(runaway, nullptr);
  constexpr int kWorkers = 2;
  std::vector<std::unique_ptr<Slice>> slices;
  for (int i = 0; i < kWorkers; ++i) slices.push_back(MakeSlice(*engine, 0x99990000u + i));
  std::atomic<bool> stop{false};
  std::atomic<bool> reset_seen{false};
  std::atomic<int> failures{0};
  std::atomic<int> successes_after{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < kWorkers; ++i) {
    workers.emplace_back([&, i] {
      for (uint32_t round = 0; !stop.load(); ++round) {
        const bool after = reset_seen.load();
        // Commands queued behind the runaway, or prepared on the device it
        // abandoned, are rebuilt on the fresh one: none fails.
        auto add = RunCheckedVectorAdd(*slices[i], kVectorAdd, round);
        if (!add.has_value()) {
          ++failures;
          ADD_FAILURE() << add.error().Describe();
        } else if (after) {
          ++successes_after;
        }
      }
    });
  }
  ExpectTimedOut(*runaway);
  reset_seen = true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (successes_after.load() < 2 * kWorkers && failures.load() == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  for (auto& w : workers) w.join();
  EXPECT_GE(successes_after.load(), 2 * kWorkers);
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(engine->device_resets(), 1u);
  for (int i = 0; i < kWorkers; ++i) ExpectKept(*slices[i], 0x99990000u + i);
}

}  // namespace
}  // namespace umdev::vendor::gpu
