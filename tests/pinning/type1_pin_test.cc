// Type1Backend page pinning: vfio_pin_pages errno values, refcounts, mlock and accounting.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "type1_test_util.h"

namespace umdev::pinning::testing {
namespace {

using ::testing::SizeIs;


// VmLck of this process in bytes: what mlock() really holds.
uint64_t ProcessLockedBytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmLck:") {
      uint64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
  }
  ADD_FAILURE() << "no VmLck in /proc/self/status";
  return 0;
}

class Type1PinTest : public Type1Test {
 protected:
  void SetUp() override {
    Type1Test::SetUp();
    ASSERT_TRUE(backend().Map(memory_.Request(kIova, kFourPages)).has_value());
  }
};

TEST_F(Type1PinTest, PinReturnsHostAddressesOfTheGuestPages) {
  memory_.WriteByte(kPageSize + 7, std::byte{0x5a});

  auto pinned = backend().PinPages(listener_, kIova + kPageSize, 2, kProtRw);

  ASSERT_TRUE(pinned.has_value());
  ASSERT_THAT(*pinned, SizeIs(2));
  EXPECT_EQ(static_cast<std::byte*>((*pinned)[0])[7], std::byte{0x5a});
  EXPECT_EQ(static_cast<std::byte*>((*pinned)[1]) - static_cast<std::byte*>((*pinned)[0]),
            static_cast<ptrdiff_t>(kPageSize));
  backend().UnpinPages(listener_, kIova + kPageSize, 2);
}

TEST_F(Type1PinTest, PinLocksThePagesAndLastUnpinUnlocksThem) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizer runtimes turn mlock() into a no-op";
#endif
  const uint64_t before = ProcessLockedBytes();

  ASSERT_TRUE(backend().PinPages(listener_, kIova, 2, kProtRead).has_value());
  const uint64_t while_pinned = ProcessLockedBytes();
  backend().UnpinPages(listener_, kIova, 2);

  EXPECT_EQ(while_pinned - before, 2 * kPageSize);
  EXPECT_EQ(ProcessLockedBytes(), before);
}

struct BadPin {
  const char* name;
  uint64_t iova;
  int npage;
  uint32_t prot;
  int code;
};
UMDEV_PRINT_CASE_AS_NAME(BadPin)

class Type1BadPinTest : public Type1PinTest, public ::testing::WithParamInterface<BadPin> {};

TEST_P(Type1BadPinTest, IsRejectedWithTheKernelsErrno) {
  const BadPin& bad = GetParam();

  auto pinned = backend().PinPages(listener_, bad.iova, bad.npage, bad.prot);

  ASSERT_FALSE(pinned.has_value());
  EXPECT_EQ(pinned.error().code, bad.code) << pinned.error().Describe();
  EXPECT_EQ(backend().locked_bytes(), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Requests, Type1BadPinTest,
    ::testing::Values(BadPin{"ZeroPages", kIova, 0, kProtRead, EINVAL},
                      BadPin{"NegativePages", kIova, -1, kProtRead, EINVAL},
                      BadPin{"UnalignedIova", kIova + 1, 1, kProtRead, EINVAL},
                      BadPin{"NoRights", kIova, 1, 0, EINVAL},
                      BadPin{"UnknownRights", kIova, 1, 8, EINVAL},
                      BadPin{"WrapsAddressSpace", ~uint64_t{0} - kPageSize + 1, 2, kProtRead,
                             EINVAL},
                      BadPin{"MoreThan512Pages", kIova, 513, kProtRead, E2BIG},
                      BadPin{"Unmapped", kIova + kFourPages, 1, kProtRead, EFAULT},
                      BadPin{"RunsPastTheMapping", kIova + 3 * kPageSize, 2, kProtRead, EFAULT}),
    CaseName());

TEST_F(Type1PinTest, PinOfMoreThanMaxAfterMappingEnoughIsE2big) {
  ASSERT_TRUE(backend().Map(FdlessRequest(0x10000000, 1024 * kPageSize)).has_value());

  auto pinned = backend().PinPages(listener_, 0x10000000, Type1Backend::kMaxPinPages + 1,
                                   kProtRead);

  ASSERT_FALSE(pinned.has_value());
  EXPECT_EQ(pinned.error().code, E2BIG);
}

TEST_F(Type1PinTest, PinOfExactly512PagesSucceeds) {
  GuestMemory big(Type1Backend::kMaxPinPages);
  Recreate({});
  account_->set_limit(Type1Backend::kMaxPinPages * kPageSize);
  ASSERT_TRUE(backend().Map(big.Request(kIova, Type1Backend::kMaxPinPages * kPageSize)).has_value());

  auto pinned = backend().PinPages(listener_, kIova, Type1Backend::kMaxPinPages, kProtRead);

  ASSERT_TRUE(pinned.has_value());
  EXPECT_EQ(account_->used(), Type1Backend::kMaxPinPages * kPageSize);
  backend().UnpinPages(listener_, kIova, Type1Backend::kMaxPinPages);
}

TEST_F(Type1PinTest, PinByUnattachedListenerIsEinval) {
  RecordingListener stranger(backend());

  auto pinned = backend().PinPages(stranger, kIova, 1, kProtRead);

  ASSERT_FALSE(pinned.has_value());
  EXPECT_EQ(pinned.error().code, EINVAL);
}

TEST_F(Type1PinTest, PinByDetachedListenerIsEinval) {
  backend().DetachListener(listener_);

  auto pinned = backend().PinPages(listener_, kIova, 1, kProtRead);

  ASSERT_FALSE(pinned.has_value());
  EXPECT_EQ(pinned.error().code, EINVAL);
}

TEST_F(Type1PinTest, WritePinOfReadOnlyMappingIsEperm) {
  ASSERT_TRUE(backend().Map(memory_.Request(0x10000000, kPageSize, kProtRead)).has_value());

  auto pinned = backend().PinPages(listener_, 0x10000000, 1, kProtWrite);

  ASSERT_FALSE(pinned.has_value());
  EXPECT_EQ(pinned.error().code, EPERM);
}

TEST_F(Type1PinTest, ReadPinOfReadOnlyMappingSucceeds) {
  ASSERT_TRUE(backend().Map(memory_.Request(0x10000000, kPageSize, kProtRead)).has_value());

  EXPECT_TRUE(backend().PinPages(listener_, 0x10000000, 1, kProtRead).has_value());
  backend().UnpinPages(listener_, 0x10000000, 1);
}

TEST_F(Type1PinTest, PinOfFdlessMappingIsEfault) {
  ASSERT_TRUE(backend().Map(FdlessRequest(0x10000000, kPageSize)).has_value());

  auto pinned = backend().PinPages(listener_, 0x10000000, 1, kProtRead);

  ASSERT_FALSE(pinned.has_value());
  EXPECT_EQ(pinned.error().code, EFAULT);
}

TEST_F(Type1PinTest, PinSpansTwoAdjacentMappings) {
  ASSERT_TRUE(backend().Map(memory_.Request(kIova + kFourPages, kPageSize)).has_value());

  auto pinned = backend().PinPages(listener_, kIova + 3 * kPageSize, 2, kProtRw);

  ASSERT_TRUE(pinned.has_value());
  EXPECT_EQ(backend().locked_bytes(), 2 * kPageSize);
  backend().UnpinPages(listener_, kIova + 3 * kPageSize, 2);
  EXPECT_EQ(backend().locked_bytes(), 0u);
}

TEST_F(Type1PinTest, TwoPinsNeedTwoUnpinsAndAreChargedOnce) {
  ASSERT_TRUE(backend().PinPages(listener_, kIova, 1, kProtRead).has_value());
  ASSERT_TRUE(backend().PinPages(listener_, kIova, 1, kProtRw).has_value());
  EXPECT_EQ(account_->used(), kPageSize);

  backend().UnpinPages(listener_, kIova, 1);
  EXPECT_EQ(backend().locked_bytes(), kPageSize);
  backend().UnpinPages(listener_, kIova, 1);
  EXPECT_EQ(backend().locked_bytes(), 0u);
  EXPECT_EQ(account_->used(), 0u);
}

TEST_F(Type1PinTest, PagePinnedByTwoListenersStaysLockedUntilBothUnpin) {
  RecordingListener second(backend());
  ASSERT_TRUE(backend().AttachListener(second).has_value());
  ASSERT_TRUE(backend().PinPages(listener_, kIova, 1, kProtRead).has_value());
  ASSERT_TRUE(backend().PinPages(second, kIova, 1, kProtRead).has_value());
  EXPECT_EQ(account_->used(), kPageSize);

  backend().UnpinPages(listener_, kIova, 1);
  backend().UnpinPages(listener_, kIova, 1);  // Its second unpin is not second's pin.
  EXPECT_EQ(backend().locked_bytes(), kPageSize);
  backend().UnpinPages(second, kIova, 1);
  EXPECT_EQ(backend().locked_bytes(), 0u);
  backend().DetachListener(second);
}

TEST_F(Type1PinTest, UnpinOfPagesNotPinnedIsIgnored) {
  ASSERT_TRUE(backend().PinPages(listener_, kIova, 1, kProtRead).has_value());

  backend().UnpinPages(listener_, kIova + kPageSize, 2);   // Mapped, not pinned.
  backend().UnpinPages(listener_, 0x10000000, 1);          // Not mapped.
  backend().UnpinPages(listener_, kIova, 0);               // Invalid count.
  backend().UnpinPages(listener_, kIova + 1, 1);           // Unaligned.

  EXPECT_EQ(backend().locked_bytes(), kPageSize);
  backend().UnpinPages(listener_, kIova, 1);
  EXPECT_EQ(backend().locked_bytes(), 0u);
}

TEST_F(Type1PinTest, ContainerLimitRefusesWithEnomemAndPinsNothing) {
  Recreate({.container_locked_limit = 2 * kPageSize});
  ASSERT_TRUE(backend().Map(memory_.Request(kIova, kFourPages)).has_value());
  ASSERT_TRUE(backend().PinPages(listener_, kIova, 1, kProtRead).has_value());

  auto pinned = backend().PinPages(listener_, kIova, 3, kProtRead);  // 2 new pages: over.

  ASSERT_FALSE(pinned.has_value());
  EXPECT_EQ(pinned.error().code, ENOMEM);
  EXPECT_EQ(backend().locked_bytes(), kPageSize);
  EXPECT_EQ(account_->used(), kPageSize);
  backend().UnpinPages(listener_, kIova, 1);  // The one earlier pin is the only one.
  EXPECT_EQ(backend().locked_bytes(), 0u);
}

TEST_F(Type1PinTest, DaemonAccountRefusesWithEnomemAndPinsNothing) {
  account_->set_limit(2 * kPageSize);

  auto pinned = backend().PinPages(listener_, kIova, 3, kProtRead);

  ASSERT_FALSE(pinned.has_value());
  EXPECT_EQ(pinned.error().code, ENOMEM);
  EXPECT_EQ(backend().locked_bytes(), 0u);
  EXPECT_EQ(account_->used(), 0u);
  EXPECT_TRUE(backend().PinPages(listener_, kIova, 2, kProtRead).has_value());
  backend().UnpinPages(listener_, kIova, 2);
}

TEST_F(Type1PinTest, RepinOfPinnedPagesIsFreeUnderAFullAccount) {
  account_->set_limit(kPageSize);
  ASSERT_TRUE(backend().PinPages(listener_, kIova, 1, kProtRead).has_value());

  EXPECT_TRUE(backend().PinPages(listener_, kIova, 1, kProtRead).has_value());
  backend().UnpinPages(listener_, kIova, 1);
  backend().UnpinPages(listener_, kIova, 1);
}

TEST_F(Type1PinTest, BackendsShareTheDaemonAccount) {
  Type1Backend other(account_);
  RecordingListener other_listener(other);
  ASSERT_TRUE(other.AttachListener(other_listener).has_value());
  ASSERT_TRUE(other.Map(memory_.Request(kIova, kPageSize)).has_value());
  account_->set_limit(kPageSize);
  ASSERT_TRUE(listener_.PinAndHold(kIova, 1, kProtRead).has_value());

  auto pinned = other.PinPages(other_listener, kIova, 1, kProtRead);

  ASSERT_FALSE(pinned.has_value());
  EXPECT_EQ(pinned.error().code, ENOMEM);
  other.DetachListener(other_listener);
}

TEST_F(Type1PinTest, TeardownWithPinsLeftReturnsEveryCharge) {
  ASSERT_TRUE(listener_.PinAndHold(kIova, 3).has_value());
  EXPECT_EQ(account_->used(), 3 * kPageSize);
  // TearDown destroys the backend and checks the account is back to zero.
}

}  // namespace
}  // namespace umdev::pinning::testing
