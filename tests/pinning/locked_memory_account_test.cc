// LockedMemoryAccount: limit enforcement, uncharge, default limit, concurrent charges.
#include "umdev/pinning/locked_memory_account.h"

#include <sys/resource.h>

#include <gtest/gtest.h>

#include <atomic>
#include <limits>
#include <thread>
#include <vector>

namespace umdev::pinning {
namespace {

TEST(LockedMemoryAccountTest, ChargesUpToTheLimit) {
  LockedMemoryAccount account(8192);

  EXPECT_TRUE(account.Charge(4096).has_value());
  EXPECT_TRUE(account.Charge(4096).has_value());
  EXPECT_EQ(account.used(), 8192u);
}

TEST(LockedMemoryAccountTest, ChargeOverTheLimitIsEnomemAndChangesNothing) {
  LockedMemoryAccount account(8192);
  ASSERT_TRUE(account.Charge(4096).has_value());

  auto charged = account.Charge(8192);

  ASSERT_FALSE(charged.has_value());
  EXPECT_EQ(charged.error().code, ENOMEM);
  EXPECT_EQ(account.used(), 4096u);
}

TEST(LockedMemoryAccountTest, UnchargeReturnsRoom) {
  LockedMemoryAccount account(4096);
  ASSERT_TRUE(account.Charge(4096).has_value());

  account.Uncharge(4096);

  EXPECT_EQ(account.used(), 0u);
  EXPECT_TRUE(account.Charge(4096).has_value());
}

TEST(LockedMemoryAccountTest, UnchargeBelowZeroStopsAtZero) {
  LockedMemoryAccount account(4096);
  ASSERT_TRUE(account.Charge(4096).has_value());

  account.Uncharge(8192);

  EXPECT_EQ(account.used(), 0u);
}

TEST(LockedMemoryAccountTest, LoweredLimitRefusesNewChargesOnly) {
  LockedMemoryAccount account(8192);
  ASSERT_TRUE(account.Charge(8192).has_value());

  account.set_limit(4096);

  EXPECT_EQ(account.used(), 8192u);
  EXPECT_EQ(account.Charge(1).error().code, ENOMEM);
}

TEST(LockedMemoryAccountTest, DefaultLimitIsTheMemlockSoftLimit) {
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_MEMLOCK, &limit), 0);
  const uint64_t expected = limit.rlim_cur == RLIM_INFINITY
                                ? std::numeric_limits<uint64_t>::max()
                                : limit.rlim_cur;

  LockedMemoryAccount account;

  EXPECT_EQ(account.limit(), expected);
}

TEST(LockedMemoryAccountTest, ConcurrentChargesNeverExceedTheLimit) {
  constexpr int kThreads = 4;
  constexpr int kAttempts = 1000;
  constexpr uint64_t kLimit = 100;  // Far fewer units than attempts.
  LockedMemoryAccount account(kLimit);
  std::atomic<uint64_t> granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kAttempts; ++i) {
        if (account.Charge(1).has_value()) ++granted;
      }
    });
  }
  for (auto& thread : threads) thread.join();

  EXPECT_EQ(granted, kLimit);
  EXPECT_EQ(account.used(), kLimit);
}

}  // namespace
}  // namespace umdev::pinning
