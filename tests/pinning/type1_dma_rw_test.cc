// Type1Backend DmaRead/DmaWrite: mmap path, adjacent mappings, bounds, rights, message channel.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <latch>

#include "type1_test_util.h"

namespace umdev::pinning::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::Each;
using ::testing::IsEmpty;
using Access = FakeChannel::Access;

constexpr uint64_t kFdlessIova = 0x40000000;  // Far from kIova.

TEST_F(Type1Test, DmaWriteLandsInGuestMemoryAtTheMappingsOffset) {
  ASSERT_TRUE(backend().Map(memory_.Request(kIova, kTwoPages, kProtRw, kTwoPages)).has_value());
  const auto data = Bytes(3, 0xab);

  ASSERT_TRUE(backend().DmaWrite(kIova + kPageSize - 1, data).has_value());

  EXPECT_EQ(memory_.ReadByte(kTwoPages + kPageSize - 1), std::byte{0xab});
  EXPECT_EQ(memory_.ReadByte(kTwoPages + kPageSize + 1), std::byte{0xab});
  EXPECT_EQ(memory_.ReadByte(kTwoPages + kPageSize + 2), std::byte{0});
}

TEST_F(Type1Test, DmaReadReturnsGuestMemory) {
  ASSERT_TRUE(backend().Map(memory_.Request(kIova, kTwoPages)).has_value());
  memory_.WriteByte(100, std::byte{0x11});
  auto out = Bytes(2, 0);

  ASSERT_TRUE(backend().DmaRead(kIova + 100, out).has_value());

  EXPECT_THAT(out, ElementsAre(std::byte{0x11}, std::byte{0}));
}

TEST_F(Type1Test, DmaAccessCrossesTwoAdjacentMappings) {
  GuestMemory other(1);
  ASSERT_TRUE(backend().Map(memory_.Request(kIova, kPageSize)).has_value());
  ASSERT_TRUE(backend().Map(other.Request(kIova + kPageSize, kPageSize)).has_value());
  const auto data = Bytes(kPageSize, 0x77);  // Half in each mapping.

  ASSERT_TRUE(backend().DmaWrite(kIova + kPageSize / 2, data).has_value());
  auto out = Bytes(kTwoPages, 0);
  ASSERT_TRUE(backend().DmaRead(kIova, out).has_value());

  EXPECT_EQ(memory_.ReadByte(kPageSize - 1), std::byte{0x77});
  EXPECT_EQ(other.ReadByte(0), std::byte{0x77});
  EXPECT_EQ(other.ReadByte(kPageSize / 2), std::byte{0});
  EXPECT_EQ(out[kPageSize / 2 - 1], std::byte{0});
  EXPECT_EQ(out[kPageSize / 2], std::byte{0x77});
  EXPECT_EQ(out[kPageSize + kPageSize / 2 - 1], std::byte{0x77});
}

TEST_F(Type1Test, DmaAccessAcrossManyMappingsSucceeds) {
  for (uint64_t i = 0; i < 5; ++i) {  // More pieces than the plan keeps inline.
    ASSERT_TRUE(backend().Map(memory_.Request(kIova + i * kPageSize, kPageSize, kProtRw,
                                              i * kPageSize)).has_value());
  }
  const auto data = Bytes(5 * kPageSize, 0x42);

  ASSERT_TRUE(backend().DmaWrite(kIova, data).has_value());

  EXPECT_EQ(memory_.ReadByte(5 * kPageSize - 1), std::byte{0x42});
}

TEST_F(Type1Test, DmaWriteOverAHoleIsEfaultAndCopiesNothing) {
  ASSERT_TRUE(backend().Map(memory_.Request(kIova, kPageSize)).has_value());
  ASSERT_TRUE(backend().Map(memory_.Request(kIova + kTwoPages, kPageSize, kProtRw,
                                            kTwoPages)).has_value());
  const auto data = Bytes(3 * kPageSize, 0x99);

  auto written = backend().DmaWrite(kIova, data);

  ASSERT_FALSE(written.has_value());
  EXPECT_EQ(written.error().code, EFAULT);
  EXPECT_EQ(memory_.ReadByte(0), std::byte{0});
}

TEST_F(Type1Test, DmaReadOfUnmappedIovaIsEfault) {
  auto out = Bytes(8, 0);

  auto read = backend().DmaRead(kIova, out);

  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(read.error().code, EFAULT);
}

TEST_F(Type1Test, DmaReadRunningPastTheLastMappingIsEfault) {
  ASSERT_TRUE(backend().Map(memory_.Request(kIova, kPageSize)).has_value());
  auto out = Bytes(2, 0);

  auto read = backend().DmaRead(kIova + kPageSize - 1, out);

  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(read.error().code, EFAULT);
}

TEST_F(Type1Test, DmaReadWrappingTheAddressSpaceIsEfault) {
  ASSERT_TRUE(backend().Map(FdlessRequest(~uint64_t{0} - kPageSize + 1, kPageSize)).has_value());
  auto out = Bytes(2, 0);

  auto read = backend().DmaRead(~uint64_t{0}, out);

  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(read.error().code, EFAULT);
}

TEST_F(Type1Test, DmaReadOfWriteOnlyMappingIsEperm) {
  ASSERT_TRUE(backend().Map(memory_.Request(kIova, kPageSize, kProtWrite)).has_value());
  auto out = Bytes(8, 0);

  auto read = backend().DmaRead(kIova, out);

  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(read.error().code, EPERM);
}

TEST_F(Type1Test, DmaWriteToReadOnlyMappingIsEpermAndCopiesNothing) {
  ASSERT_TRUE(backend().Map(memory_.Request(kIova, kPageSize)).has_value());
  ASSERT_TRUE(backend().Map(memory_.Request(kIova + kPageSize, kPageSize, kProtRead,
                                            kPageSize)).has_value());
  const auto data = Bytes(kTwoPages, 0x31);

  auto written = backend().DmaWrite(kIova, data);

  ASSERT_FALSE(written.has_value());
  EXPECT_EQ(written.error().code, EPERM);
  EXPECT_EQ(memory_.ReadByte(0), std::byte{0});
}

TEST_F(Type1Test, EmptyAccessSucceedsAnywhere) {
  EXPECT_TRUE(backend().DmaRead(kIova, {}).has_value());
  EXPECT_TRUE(backend().DmaWrite(kIova, {}).has_value());
}

class Type1ChannelTest : public Type1Test {
 protected:
  void SetUp() override {
    Type1Test::SetUp();
    ASSERT_TRUE(backend().Map(FdlessRequest(kFdlessIova, kTwoPages)).has_value());
    backend().SetMessageChannel(&channel_);
  }
  void TearDown() override {
    backend().SetMessageChannel(nullptr);
    Type1Test::TearDown();
  }
  FakeChannel channel_{kFdlessIova, kTwoPages};
};

TEST_F(Type1ChannelTest, FdlessWriteAndReadGoThroughTheChannel) {
  const auto data = Bytes(16, 0x64);
  auto out = Bytes(16, 0);

  ASSERT_TRUE(backend().DmaWrite(kFdlessIova + 8, data).has_value());
  ASSERT_TRUE(backend().DmaRead(kFdlessIova + 8, out).has_value());

  EXPECT_THAT(channel_.writes(), ElementsAre(Access{kFdlessIova + 8, 16}));
  EXPECT_THAT(channel_.reads(), ElementsAre(Access{kFdlessIova + 8, 16}));
  EXPECT_EQ(channel_.at(kFdlessIova + 8), std::byte{0x64});
  EXPECT_THAT(out, Each(std::byte{0x64}));
}

TEST_F(Type1ChannelTest, AccessSpanningFdAndFdlessMappingsSplitsAtTheBoundary) {
  ASSERT_TRUE(backend().Map(memory_.Request(kFdlessIova - kPageSize, kPageSize)).has_value());
  const auto data = Bytes(kPageSize, 0x5c);

  ASSERT_TRUE(backend().DmaWrite(kFdlessIova - kPageSize / 2, data).has_value());

  EXPECT_EQ(memory_.ReadByte(kPageSize - 1), std::byte{0x5c});
  EXPECT_THAT(channel_.writes(), ElementsAre(Access{kFdlessIova, kPageSize / 2}));
}

TEST_F(Type1ChannelTest, ChannelErrorIsReturned) {
  channel_.set_fail_with(ECONNRESET);
  auto out = Bytes(4, 0);

  auto read = backend().DmaRead(kFdlessIova, out);

  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(read.error().code, ECONNRESET);
}

TEST_F(Type1ChannelTest, FdlessAccessWithoutChannelIsEfault) {
  backend().SetMessageChannel(nullptr);
  auto out = Bytes(4, 0);

  auto read = backend().DmaRead(kFdlessIova, out);

  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(read.error().code, EFAULT);
  EXPECT_THAT(channel_.reads(), IsEmpty());
}

TEST_F(Type1ChannelTest, WriteToReadOnlyFdlessMappingIsEperm) {
  ASSERT_TRUE(backend().Map(FdlessRequest(kFdlessIova + kTwoPages, kPageSize, kProtRead))
                  .has_value());
  const auto data = Bytes(4, 1);

  auto written = backend().DmaWrite(kFdlessIova + kTwoPages, data);

  ASSERT_FALSE(written.has_value());
  EXPECT_EQ(written.error().code, EPERM);
  EXPECT_THAT(channel_.writes(), IsEmpty());
}

// A channel whose reads block until released, to observe calls in flight.
class BlockingChannel : public DmaMessageChannel {
 public:
  Result<void> DmaRead(uint64_t, std::span<std::byte>) override {
    entered_.count_down();
    release_.wait();
    return {};
  }
  Result<void> DmaWrite(uint64_t, std::span<const std::byte>) override { return {}; }

  std::latch entered_{1};
  std::latch release_{1};
};

// A channel that asks the backend something needing its lock from another
// thread: it would never answer if the read were made with the lock held.
class LockProbingChannel : public DmaMessageChannel {
 public:
  explicit LockProbingChannel(Type1Backend& backend) : backend_(backend) {}
  Result<void> DmaRead(uint64_t, std::span<std::byte>) override {
    auto query = std::async(std::launch::async, [&] { return backend_.mapping_count(); });
    answered_ = query.wait_for(kHangTimeout) == std::future_status::ready;
    return {};
  }
  Result<void> DmaWrite(uint64_t, std::span<const std::byte>) override { return {}; }
  bool answered_ = false;

 private:
  Type1Backend& backend_;
};

TEST_F(Type1ChannelTest, ChannelIsCalledWithNoBackendLockHeld) {
  LockProbingChannel probing(backend());
  backend().SetMessageChannel(&probing);
  auto out = Bytes(4, 0);

  ASSERT_TRUE(backend().DmaRead(kFdlessIova, out).has_value());

  EXPECT_TRUE(probing.answered_);
}

TEST_F(Type1ChannelTest, DetachingTheChannelWaitsForCallsInFlight) {
  BlockingChannel blocking;
  backend().SetMessageChannel(&blocking);
  auto read = std::async(std::launch::async, [&] {
    auto out = Bytes(4, 0);
    return backend().DmaRead(kFdlessIova, out);
  });
  blocking.entered_.wait();

  auto detach = std::async(std::launch::async, [&] { backend().SetMessageChannel(nullptr); });
  EXPECT_EQ(detach.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  blocking.release_.count_down();

  detach.get();
  EXPECT_TRUE(read.get().has_value());
}

}  // namespace
}  // namespace umdev::pinning::testing
