// Two instances of different types (gpu-1of2 and gpu-1of4) on one parent,
// under every scheduling policy: both work on their own slices at the same
// time, and neither reaches the other's memory through offsets past its own
// slice, while the other keeps running.
#include <atomic>
#include <thread>
#include <tuple>

#include "gpu_tenant_test_util.h"

namespace umdev::vendor::gpu::testing {
namespace {

class GpuIsolationTest : public ::testing::TestWithParam<EngineKind> {};

constexpr uint32_t kPatternA = 0xaaaa5555u;
constexpr uint32_t kPatternB = 0xbbbb6666u;

// Work that touches the whole slice: FILL it with |pattern|, COPY a page to
// guest memory and back to its last page, COPY device to device, FENCE.
void QueueWholeSliceWork(Tenant& t, uint32_t pattern, uint64_t fence) {
  const uint64_t size = t.slice_size();
  // A FILL per MiB: the CPU engine would spread a larger one over TBB's
  // threads, whose synchronisation ThreadSanitizer cannot see.
  for (uint64_t at = 0; at < size; at += 1 << 20) t.Push(Fill(at, 1 << 20, pattern));
  t.Push(Copy(kCopyDstGuest, 0x1000, kDataIova, 4096));
  t.Push(Copy(kCopySrcGuest, kDataIova, size - 4096, 4096));
  t.Push(Copy(0, 0, 0x10000, 0x10000));
  t.Push(Fence(kDataIova + 0x2000, fence, false));
}

// Entries of |t| that aim past its own slice (where another slice would be
// if slices were laid out one after the other): each EFAULT.
std::vector<std::pair<const char*, Desc>> OutOfBoundsEntries(Tenant& t, uint64_t other_size) {
  const uint64_t size = t.slice_size();
  // DISPATCH arguments whose binding starts inside and runs past the slice,
  // and one that starts where the next slice would start.
  const uint32_t name[2] = {0x6d6f6f62, 0};  // "boom"
  t.PutSlice(0x3000, std::as_bytes(std::span(name)));
  for (const auto& [at, offset] : {std::pair<uint64_t, uint64_t>{0x2000, size - 16},
                                   std::pair<uint64_t, uint64_t>{0x2100, size}}) {
    uint32_t args[12] = {1, 1, 1, 1, 0, 0, 0, 0};
    std::memcpy(&args[8], &offset, 8);
    const uint64_t binding_size = 64;
    std::memcpy(&args[10], &binding_size, 8);
    t.PutSlice(at, std::as_bytes(std::span(args)));
  }
  return {
      {"fill just past the slice", Fill(size, 4096, 0xdeadbeef)},
      {"fill across the end", Fill(size - 4096, 8192, 0xdeadbeef)},
      {"fill the neighbour's range", Fill(size + other_size / 2, 4096, 0xdeadbeef)},
      {"fill at the top of the address space", Fill(~uint64_t{3}, 4, 0xdeadbeef)},
      {"copy from past the slice", Copy(0, size, 0, 4096)},
      {"copy to past the slice", Copy(0, 0, size + 4096, 4096)},
      {"copy size wraps", Copy(0, 8, 0x100000, ~uint64_t{7})},
      {"read the neighbour into guest memory", Copy(kCopyDstGuest, size, kDataIova, 4096)},
      {"write guest memory into the neighbour", Copy(kCopySrcGuest, kDataIova, size, 4096)},
      {"dispatch binding across the end", Dispatch(0, 4, 0x3000, 0x2000)},
      {"dispatch binding in the neighbour", Dispatch(0, 4, 0x3000, 0x2100)},
      {"dispatch module past the slice", Dispatch(size, 4, 0x3000, 0x2000)},
      {"dispatch arguments past the slice", Dispatch(0, 4, 0x3000, size)},
  };
}

// Keeps |t|'s ring full of FILLs of its own pattern on a thread until
// stopped, so the other tenant's commands run between them.
class Flood {
 public:
  Flood(Tenant& t, uint32_t pattern) : t_(t) {
    for (uint32_t i = 0; i < kTenantRing; ++i) t_.Push(Fill(0, 0x40000, pattern));
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        t_.SetReg(kRegQueueTail, t_.Reg(kRegQueueHead) + kTenantRing);
        t_.SetReg(kRegDoorbell, 1);
        std::this_thread::sleep_for(std::chrono::microseconds(500));
      }
    });
  }
  ~Flood() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  Tenant& t_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// |attacker| runs each out-of-bounds entry while |victim| floods: EFAULT at
// that entry, nothing after it runs until ERROR_CLEAR, and the victim's slice
// and counters show no trace.
void AttackWhileTheOtherRuns(Tenant& attacker, Tenant& victim, uint32_t victim_pattern) {
  uint64_t errors = attacker.Reg64(kRegStatErrors);
  const auto entries = OutOfBoundsEntries(attacker, victim.slice_size());
  const uint64_t victim_commands = victim.Reg64(kRegStatCommands);
  const uint64_t victim_errors = victim.Reg64(kRegStatErrors);
  {
    Flood flood(victim, victim_pattern);
    for (const auto& [name, entry] : entries) {
      SCOPED_TRACE(name);
      const uint32_t head = attacker.Reg(kRegQueueHead);
      attacker.Push(entry);
      attacker.Push(Fill(0x4000, 4, 0x77));
      attacker.Ring();
      ASSERT_TRUE(attacker.device().WaitIdle());
      EXPECT_EQ(attacker.Reg(kRegErrorCode), static_cast<uint32_t>(EFAULT));
      EXPECT_EQ(attacker.Reg(kRegErrorIndex), head);
      EXPECT_EQ(attacker.Reg(kRegQueueHead), head);
      EXPECT_NE(attacker.Reg(kRegIntStatus) & kIntError, 0u);
      EXPECT_EQ(attacker.Reg64(kRegStatErrors), ++errors);
      attacker.SetReg(kRegIntStatus, kIntError);
      attacker.SetReg(kRegErrorClear, 1);
      ASSERT_TRUE(attacker.device().WaitIdle());
      EXPECT_EQ(attacker.Reg(kRegErrorCode), 0u);
      EXPECT_EQ(attacker.Reg(kRegQueueHead), head + 2);
      EXPECT_EQ(attacker.SliceWords(0x4000, 1).front(), 0x77u);
    }
    // The victim made progress during the attack: bounded polling for it.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (victim.Reg64(kRegStatCommands) == victim_commands &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  EXPECT_GT(victim.Reg64(kRegStatCommands), victim_commands);
  victim.SetReg(kRegQueueCtrl, 0);  // Drop what the flood left queued.
  ASSERT_TRUE(victim.device().WaitIdle());
  EXPECT_EQ(victim.Reg(kRegErrorCode), 0u);
  EXPECT_EQ(victim.Reg64(kRegStatErrors), victim_errors);
  EXPECT_TRUE(victim.SliceIs(victim_pattern));
  victim.EnableQueue();
}

TEST_P(GpuIsolationTest, InstancesOfDifferentTypesStayIsolated) {
  for (SchedulingPolicy policy : kEveryPolicy) {
    SCOPED_TRACE(std::string(FormatSchedulingPolicy(policy)));
    auto parent = MakeTenantParent(GetParam(), policy);
    if (parent == nullptr && GetParam() == EngineKind::kVulkan) GTEST_SKIP() << kNoVulkanMessage;
    ASSERT_NE(parent, nullptr);
    Tenant a(*parent, "1of2");
    Tenant b(*parent, "1of4");
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a.slice_size(), kTenantParentMemory / 2);
    ASSERT_EQ(b.slice_size(), kTenantParentMemory / 4);
    a.EnableQueue();
    b.EnableQueue();

    // Both at once, each over its whole slice.
    QueueWholeSliceWork(a, kPatternA, 1);
    QueueWholeSliceWork(b, kPatternB, 2);
    a.Ring();
    b.Ring();
    ASSERT_TRUE(a.device().WaitIdle());
    ASSERT_TRUE(b.device().WaitIdle());
    for (auto [t, pattern, fence] : {std::tuple<Tenant*, uint32_t, uint64_t>{&a, kPatternA, 1},
                                     std::tuple<Tenant*, uint32_t, uint64_t>{&b, kPatternB, 2}}) {
      EXPECT_EQ(t->Reg(kRegErrorCode), 0u);
      EXPECT_EQ(t->Reg64(kRegFenceDone), fence);
      EXPECT_TRUE(t->SliceIs(pattern));
      uint32_t copied = 0;
      std::memcpy(&copied, t->Guest(kDataIova), 4);
      EXPECT_EQ(copied, pattern);
    }

    // Each in turn aims past its slice while the other floods its own.
    AttackWhileTheOtherRuns(a, b, kPatternB);
    AttackWhileTheOtherRuns(b, a, kPatternA);
    // The attackers' own slices hold only what they wrote themselves.
    EXPECT_EQ(a.SliceWords(0, 1).front(), kPatternA);
    EXPECT_EQ(b.SliceWords(0, 1).front(), kPatternB);
    EXPECT_EQ(a.SliceWords(a.slice_size() - 4, 1).front(), kPatternA);
    EXPECT_EQ(b.SliceWords(b.slice_size() - 4, 1).front(), kPatternB);
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, GpuIsolationTest,
                         ::testing::Values(EngineKind::kVulkan, EngineKind::kCpu), EngineName);

}  // namespace
}  // namespace umdev::vendor::gpu::testing
