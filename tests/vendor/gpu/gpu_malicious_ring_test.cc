// A malicious guest against a running gpu parent, under every scheduling
// policy: fuzzed ring entries, unmapped IOVAs and out-of-bounds offsets,
// nonsense ring registers, and a ring that never ends. The device reports
// each error where it is due, and a second, well-behaved instance on the same
// parent keeps completing its FENCEs meanwhile. Progress is awaited by
// bounded polling for a condition, never by time.
#include <atomic>
#include <random>
#include <thread>

#include "gpu_tenant_test_util.h"

namespace umdev::vendor::gpu::testing {
namespace {

class GpuMaliciousRingTest : public ::testing::TestWithParam<EngineKind> {
 protected:
  // The parent, or null when the test is to be skipped.
  std::shared_ptr<GpuParent> Parent(SchedulingPolicy policy) {
    auto parent = MakeTenantParent(GetParam(), policy);
    EXPECT_TRUE(parent != nullptr || GetParam() == EngineKind::kVulkan);
    return parent;
  }
};

// Runs |victim|'s rounds (FILL, COPY to guest, FENCE) on a thread until
// stopped; each must complete.
class Victim {
 public:
  explicit Victim(Tenant& t) : t_(t) {
    t_.EnableQueue();
    thread_ = std::thread([this] {
      for (uint32_t value = 1; !stop_.load(); ++value) {
        if (!t_.RunRound(value)) {
          failed_ = true;
          return;
        }
        ++rounds_;
      }
    });
  }
  ~Victim() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int rounds() const { return rounds_.load(); }
  bool failed() const { return failed_.load(); }

 private:
  Tenant& t_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::atomic<int> rounds_{0};
  std::thread thread_;
};

// What a fuzzed entry must do: kRuns, kAnyOutcome, or fail with that errno.
constexpr int kRuns = 0;
constexpr int kAnyOutcome = -1;

struct Fuzzed {
  Desc entry;
  int expect;
};

bool AllowedErrno(uint32_t code) { return code == EINVAL || code == EFAULT || code == ENOTSUP; }

// One entry from a seeded generator: random bytes, and commands whose
// offsets run past the slice or whose IOVAs are not mapped, mixed with
// valid ones. Successful entries never write guest memory below kDataIova
// (the ring).
Fuzzed NextFuzzed(std::mt19937_64& rng, uint64_t slice) {
  const uint64_t unmapped = kGuestIova + kGuestBytes + (rng() % 1024) * 4096;
  const uint64_t below = (rng() % (kGuestIova / 4096 - 16)) * 4096;  // Under guest RAM.
  const uint64_t past = slice + 4 * (rng() % (uint64_t{1} << 30));
  const uint64_t small = 4 * (1 + rng() % 1024);
  switch (rng() % 11) {
    case 0: {  // Random bytes: almost always an unknown opcode.
      Desc d;
      for (uint32_t i = 0; i < kEntrySize; i += 8) d.U64(i, rng());
      uint32_t opcode = 0;
      std::memcpy(&opcode, d.bytes, 4);
      return {d, opcode >= kOpCopy && opcode <= kOpFence ? kAnyOutcome : EINVAL};
    }
    case 1: {  // Random operands of a known opcode.
      Desc d;
      for (uint32_t i = 0; i < kEntrySize; i += 8) d.U64(i, rng());
      d.U32(kEntryOpcode, kOpCopy + static_cast<uint32_t>(rng() % 4));
      d.U32(kEntryFlags, static_cast<uint32_t>(rng() % 8));
      return {d, kAnyOutcome};
    }
    case 2:
      return {Fill(4 * (rng() % ((slice - 4096) / 4)), small, static_cast<uint32_t>(rng())), kRuns};
    case 3:
      return {Fill(past, small, 0), EFAULT};
    case 4:
      return {Copy(0, past, 0, 1 + rng() % 4096), EFAULT};
    case 5:
      return {Copy(0, 0, past, 1 + rng() % 4096), EFAULT};
    case 6:
      return {Copy(kCopySrcGuest, unmapped, 0, 1 + rng() % 0x10000), EFAULT};
    case 7:
      return {Copy(kCopyDstGuest, 0, below, 1 + rng() % 0x10000), EFAULT};
    case 8:
      return rng() % 2 == 0 ? Fuzzed{Fence(unmapped, rng()), EFAULT}
                            : Fuzzed{Fence(below + 4, rng()), EINVAL};  // Unaligned.
    case 9:
      return {Dispatch(past & ~uint64_t{3}, 4, 0, 0), EFAULT};
    default:
      return {Copy(kCopySrcGuest, kDataIova + rng() % 0x8000, rng() % 0x10000,
                   1 + rng() % 0x8000),
              kRuns};
  }
}

TEST_P(GpuMaliciousRingTest, FuzzedEntriesAreContained) {
  constexpr uint32_t kEntries = 2000;
  constexpr uint32_t kBatch = 32;
  for (SchedulingPolicy policy : kEveryPolicy) {
    SCOPED_TRACE(std::string(FormatSchedulingPolicy(policy)));
    auto parent = Parent(policy);
    if (parent == nullptr) GTEST_SKIP() << kNoVulkanMessage;
    Tenant attacker(*parent, "1of2");
    Tenant honest(*parent, "1of4");
    ASSERT_TRUE(attacker.ok() && honest.ok());
    std::mt19937_64 rng(0x5eed0000 + static_cast<uint64_t>(policy));
    const uint64_t slice = attacker.slice_size();
    std::vector<int> expect;  // Per ring index.
    uint64_t errors = 0, ran = 0;
    attacker.EnableQueue();
    Victim victim(honest);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    // Fuzz at least kEntries, and on until the honest tenant has completed
    // rounds while the fuzzing went on.
    while (expect.size() < kEntries || (victim.rounds() < 3 && !victim.failed())) {
      ASSERT_TRUE(std::chrono::steady_clock::now() < deadline) << "honest rounds "
                                                               << victim.rounds();
      uint32_t checked = attacker.Reg(kRegQueueHead);
      for (uint32_t i = 0; i < kBatch; ++i) {
        Fuzzed f = NextFuzzed(rng, slice);
        attacker.Push(f.entry);
        expect.push_back(f.expect);
      }
      attacker.Ring();
      while (true) {
        ASSERT_TRUE(attacker.device().WaitIdle());
        const uint32_t head = attacker.Reg(kRegQueueHead);
        for (; checked < head; ++checked) {
          EXPECT_NE(expect[checked], static_cast<int>(EINVAL)) << "entry " << checked << " ran";
          EXPECT_NE(expect[checked], static_cast<int>(EFAULT)) << "entry " << checked << " ran";
          ++ran;
        }
        const uint32_t code = attacker.Reg(kRegErrorCode);
        if (code == 0) break;
        ++errors;
        ASSERT_EQ(attacker.Reg(kRegErrorIndex), head);
        const int want = expect[head];
        EXPECT_NE(want, kRuns) << "entry " << head << " failed with " << code;
        if (want == kAnyOutcome) {
          EXPECT_TRUE(AllowedErrno(code)) << "entry " << head << ": " << code;
        } else if (want != kRuns) {
          EXPECT_EQ(code, static_cast<uint32_t>(want)) << "entry " << head;
        }
        EXPECT_NE(attacker.Reg(kRegIntStatus) & kIntError, 0u);
        attacker.SetReg(kRegIntStatus, kIntError);
        attacker.SetReg(kRegErrorClear, 1);  // Skips it and goes on.
        checked = head + 1;
      }
      ASSERT_EQ(attacker.Reg(kRegQueueHead), attacker.tail());
      if (::testing::Test::HasFailure()) break;
    }
    victim.Stop();
    EXPECT_FALSE(victim.failed());
    EXPECT_GE(victim.rounds(), 3);
    EXPECT_EQ(attacker.Reg64(kRegStatErrors), errors);
    EXPECT_EQ(attacker.Reg64(kRegStatCommands), ran);
    EXPECT_GT(errors, 0u);
    EXPECT_GT(ran, 0u);
    EXPECT_EQ(honest.Reg64(kRegStatErrors), 0u);
    // The attacker's own device still works once it behaves.
    EXPECT_TRUE(attacker.RunRound(0x600d));
  }
}

// Ring registers a guest may set to anything: the queue refuses to start,
// or stops at its first entry, with the errno the layout calls for.
TEST_P(GpuMaliciousRingTest, NonsenseRingRegistersAreContained) {
  for (SchedulingPolicy policy : kEveryPolicy) {
    SCOPED_TRACE(std::string(FormatSchedulingPolicy(policy)));
    auto parent = Parent(policy);
    if (parent == nullptr) GTEST_SKIP() << kNoVulkanMessage;
    Tenant attacker(*parent, "1of2");
    Tenant honest(*parent, "1of4");
    ASSERT_TRUE(attacker.ok() && honest.ok());
    Victim victim(honest);
    auto expect_stopped = [&](uint32_t code, const char* what) {
      SCOPED_TRACE(what);
      ASSERT_TRUE(attacker.device().WaitIdle());
      EXPECT_EQ(attacker.Reg(kRegErrorCode), code);
      // Disabled, not reset: a reset zeroes the slice with a FILL the CPU
      // engine spreads over TBB's threads, which ThreadSanitizer cannot follow.
      // Disabled first, so the cleared error cannot recur before that.
      attacker.SetReg(kRegQueueCtrl, 0);
      attacker.SetReg(kRegErrorClear, 1);
    };
    for (uint32_t size : {0u, 1u, 8u, 15u, 24u, 100u, 65537u, 1u << 31, 0xffffffffu}) {
      SCOPED_TRACE(size);
      attacker.SetReg(kRegQueueBase, static_cast<uint32_t>(kRingIova));
      attacker.SetReg(kRegQueueSize, size);
      attacker.SetReg(kRegQueueCtrl, kQueueEnable);
      EXPECT_EQ(attacker.Reg(kRegQueueCtrl), 0u);
      expect_stopped(EINVAL, "size refused");
    }
    for (uint64_t base : {kRingIova + 64, kRingIova + 8, uint64_t{0xfff}}) {
      attacker.SetReg(kRegQueueBase, static_cast<uint32_t>(base));
      attacker.SetReg(kRegQueueSize, 16);
      attacker.SetReg(kRegQueueCtrl, kQueueEnable);
      EXPECT_EQ(attacker.Reg(kRegQueueCtrl), 0u);
      expect_stopped(EINVAL, "unaligned base refused");
    }
    // Aligned bases the guest never mapped, up to the top of the IOVA
    // space where entry addresses would wrap.
    for (uint64_t base : {uint64_t{0}, kGuestIova + kGuestBytes, uint64_t{0xdead000} << 20,
                          ~uint64_t{0xfff}}) {
      attacker.SetReg(kRegQueueBase, static_cast<uint32_t>(base));
      attacker.SetReg(kRegQueueBase + 4, static_cast<uint32_t>(base >> 32));
      attacker.SetReg(kRegQueueSize, kMaxQueueSize);
      attacker.SetReg(kRegQueueCtrl, kQueueEnable);
      EXPECT_EQ(attacker.Reg(kRegQueueCtrl), kQueueEnable);
      attacker.SetReg(kRegQueueTail, kMaxQueueSize);
      attacker.SetReg(kRegDoorbell, 1);
      ASSERT_TRUE(attacker.device().WaitIdle());
      EXPECT_EQ(attacker.Reg(kRegQueueHead), 0u);
      expect_stopped(EFAULT, "entry in unmapped memory");
    }
    // TAIL behind HEAD, or more than a ring ahead: nothing is consumed.
    for (uint32_t tail : {0xffffffffu, kTenantRing + 1, 0x80000000u}) {
      attacker.EnableQueue();
      attacker.SetReg(kRegQueueTail, tail);
      attacker.SetReg(kRegDoorbell, 1);
      expect_stopped(EINVAL, "tail out of range");
    }
    // The size changed to 0 under a running ring: the next entry is refused.
    attacker.EnableQueue();
    for (uint32_t i = 0; i < 8; ++i) attacker.Push(Fill(0, 4096, i));
    attacker.SetReg(kRegQueueSize, 0);
    attacker.Ring();
    expect_stopped(EINVAL, "size 0 while enabled");
    // The base moved to unmapped memory under a running ring.
    attacker.EnableQueue();
    for (uint32_t i = 0; i < 8; ++i) attacker.Push(Fill(0, 4096, i));
    attacker.SetReg(kRegQueueBase + 4, 0x10);
    attacker.Ring();
    expect_stopped(EFAULT, "base moved while enabled");

    // The honest tenant went on throughout, and so does the attacker once
    // it programs a sane ring.
    attacker.SetReg(kRegQueueBase + 4, 0);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (victim.rounds() < 2 && !victim.failed() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    victim.Stop();
    EXPECT_FALSE(victim.failed());
    EXPECT_GE(victim.rounds(), 2);
    attacker.EnableQueue();
    EXPECT_TRUE(attacker.RunRound(0x600d));
  }
}

// A guest that keeps moving TAIL around its ring, so its queue never runs
// dry: the other instance's FENCEs still complete under every policy, and
// the parent goes on once the flooding instance is removed mid-ring.
TEST_P(GpuMaliciousRingTest, ARingThatNeverEndsDoesNotStarveAnother) {
  for (SchedulingPolicy policy : kEveryPolicy) {
    SCOPED_TRACE(std::string(FormatSchedulingPolicy(policy)));
    auto parent = Parent(policy);
    if (parent == nullptr) GTEST_SKIP() << kNoVulkanMessage;
    auto attacker = std::make_unique<Tenant>(*parent, "1of2");
    Tenant honest(*parent, "1of4");
    ASSERT_TRUE(attacker->ok() && honest.ok());
    attacker->EnableQueue();
    for (uint32_t i = 0; i < kTenantRing; ++i) attacker->Push(Fill(0, 1 << 20, i));
    std::atomic<bool> stop{false};
    std::thread flood([&] {
      while (!stop.load()) {
        attacker->SetReg(kRegQueueTail, attacker->Reg(kRegQueueHead) + kTenantRing);
        attacker->SetReg(kRegDoorbell, 1);
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    });
    honest.EnableQueue();
    // Rounds until the flood has gone around its ring at least twice.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    uint32_t value = 1;
    bool all_completed = true;
    for (; value <= 3 || attacker->Reg(kRegQueueHead) < 2 * kTenantRing; ++value) {
      if (std::chrono::steady_clock::now() >= deadline) break;
      all_completed = all_completed && honest.RunRound(value);
    }
    stop = true;
    flood.join();
    EXPECT_TRUE(all_completed);
    EXPECT_GT(value, 3u);
    EXPECT_GE(attacker->Reg(kRegQueueHead), 2 * kTenantRing);
    EXPECT_EQ(attacker->Reg(kRegErrorCode), 0u);
    EXPECT_EQ(honest.Reg64(kRegStatErrors), 0u);
    // Removed with its ring still full; a new instance takes its place.
    attacker.reset();
    Tenant next(*parent, "1of2");
    ASSERT_TRUE(next.ok());
    next.EnableQueue();
    EXPECT_TRUE(next.RunRound(0x600d));
    EXPECT_TRUE(honest.RunRound(value));
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, GpuMaliciousRingTest,
                         ::testing::Values(EngineKind::kVulkan, EngineKind::kCpu), EngineName);

}  // namespace
}  // namespace umdev::vendor::gpu::testing
