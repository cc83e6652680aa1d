// Type1Backend unmap contract: listeners told with no lock held, retries, revocation, detach.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <latch>
#include <thread>

#include "type1_test_util.h"

namespace umdev::pinning::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using Call = RecordingListener::Call;

class Type1UnmapTest : public Type1Test {
 protected:
  void SetUp() override {
    Type1Test::SetUp();
    ASSERT_TRUE(backend().Map(memory_.Request(kIova, kFourPages)).has_value());
  }
};

TEST_F(Type1UnmapTest, UnmapOverPinsNotifiesListenerWhichUnpinsFromTheCallback) {
  ASSERT_TRUE(listener_.PinAndHold(kIova + kPageSize, 2).has_value());

  auto unmapped = backend().Unmap(kIova, kFourPages);

  ASSERT_TRUE(unmapped.has_value());
  EXPECT_EQ(*unmapped, kFourPages);
  EXPECT_THAT(listener_.unmap_calls(), ElementsAre(Call{kIova, kFourPages}));
  EXPECT_EQ(backend().locked_bytes(), 0u);
  EXPECT_EQ(account_->used(), 0u);
}

TEST_F(Type1UnmapTest, UnmapWithoutPinsNotifiesNobody) {
  ASSERT_TRUE(backend().Unmap(kIova, kFourPages).has_value());

  EXPECT_THAT(listener_.unmap_calls(), IsEmpty());
}

TEST_F(Type1UnmapTest, EveryAttachedListenerIsNotified) {
  RecordingListener bystander(backend());  // Holds no pins, is told anyway (as type1).
  ASSERT_TRUE(backend().AttachListener(bystander).has_value());
  ASSERT_TRUE(listener_.PinAndHold(kIova, 1).has_value());

  ASSERT_TRUE(backend().Unmap(kIova, kFourPages).has_value());

  EXPECT_THAT(bystander.unmap_calls(), ElementsAre(Call{kIova, kFourPages}));
  backend().DetachListener(bystander);
}

TEST_F(Type1UnmapTest, EachPinnedMappingIsReportedWithItsOwnRange) {
  ASSERT_TRUE(backend().Map(memory_.Request(kIova + kFourPages, kPageSize)).has_value());
  ASSERT_TRUE(listener_.PinAndHold(kIova, 1).has_value());
  ASSERT_TRUE(listener_.PinAndHold(kIova + kFourPages, 1).has_value());

  ASSERT_TRUE(backend().UnmapAll().has_value());

  EXPECT_THAT(listener_.unmap_calls(),
              ElementsAre(Call{kIova, kFourPages}, Call{kIova + kFourPages, kPageSize}));
}

TEST_F(Type1UnmapTest, RefusingListenerHasItsPinsRevokedAndTheUnmapCompletes) {
  expect_revocations_ = true;
  ASSERT_TRUE(listener_.PinAndHold(kIova, 2).has_value());
  listener_.set_refuse(true);

  auto unmapped = backend().Unmap(kIova, kFourPages);

  ASSERT_TRUE(unmapped.has_value());
  EXPECT_EQ(*unmapped, kFourPages);
  EXPECT_THAT(listener_.unmap_calls(), SizeIs(Type1Backend::kMaxUnmapRetries));
  EXPECT_THAT(listener_.revoked_calls(), ElementsAre(Call{kIova, kFourPages}));
  EXPECT_EQ(backend().locked_bytes(), 0u);
  EXPECT_EQ(account_->used(), 0u);
  EXPECT_EQ(backend().mapping_count(), 0u);
}

TEST_F(Type1UnmapTest, RevocationSparesListenersThatUnpinned) {
  expect_revocations_ = true;
  RecordingListener good(backend());
  ASSERT_TRUE(backend().AttachListener(good).has_value());
  ASSERT_TRUE(good.PinAndHold(kIova, 1).has_value());
  ASSERT_TRUE(listener_.PinAndHold(kIova + kPageSize, 1).has_value());
  listener_.set_refuse(true);

  ASSERT_TRUE(backend().Unmap(kIova, kFourPages).has_value());

  EXPECT_THAT(good.revoked_calls(), IsEmpty());
  EXPECT_THAT(listener_.revoked_calls(), SizeIs(1));
  backend().DetachListener(good);
}

// A device whose callback hands the unpin to its own worker thread and waits.
class HandOffListener : public DmaUnmapListener {
 public:
  explicit HandOffListener(IommuBackend& backend) : backend_(backend) {}
  void OnDmaUnmap(uint64_t iova, uint64_t) override {
    std::thread worker([&] { backend_.UnpinPages(*this, iova, 1); });
    worker.join();
  }

 private:
  IommuBackend& backend_;
};

TEST_F(Type1UnmapTest, UnpinFromAnotherThreadDuringTheCallbackCompletesTheUnmap) {
  HandOffListener device(backend());
  ASSERT_TRUE(backend().AttachListener(device).has_value());
  ASSERT_TRUE(backend().PinPages(device, kIova, 1, kProtRead).has_value());

  auto unmapped = backend().Unmap(kIova, kFourPages);

  ASSERT_TRUE(unmapped.has_value());
  EXPECT_EQ(account_->used(), 0u);
  backend().DetachListener(device);
}

// A listener whose callback blocks until released, to catch the backend with
// a callback in flight.
class BlockingListener : public DmaUnmapListener {
 public:
  explicit BlockingListener(IommuBackend& backend) : backend_(backend) {}
  void OnDmaUnmap(uint64_t iova, uint64_t) override {
    entered_.count_down();
    release_.wait();
    backend_.UnpinPages(*this, iova, 1);
  }
  std::latch entered_{1};
  std::latch release_{1};

 private:
  IommuBackend& backend_;
};

TEST_F(Type1UnmapTest, CallbackRunsWithNoBackendLockHeld) {
  BlockingListener blocking(backend());
  ASSERT_TRUE(backend().AttachListener(blocking).has_value());
  ASSERT_TRUE(backend().PinPages(blocking, kIova, 1, kProtRead).has_value());
  auto unmap = std::async(std::launch::async, [&] { return backend().Unmap(kIova, kFourPages); });
  blocking.entered_.wait();

  // Would block on the backend's lock if the callback held it.
  auto query = std::async(std::launch::async, [&] { return backend().mapping_count(); });
  const auto status = query.wait_for(kHangTimeout);
  blocking.release_.count_down();

  EXPECT_EQ(status, std::future_status::ready);
  ASSERT_TRUE(unmap.get().has_value());
  backend().DetachListener(blocking);
}

TEST_F(Type1UnmapTest, DetachWaitsForTheListenersCallbackInFlight) {
  BlockingListener blocking(backend());
  ASSERT_TRUE(backend().AttachListener(blocking).has_value());
  ASSERT_TRUE(backend().PinPages(blocking, kIova, 1, kProtRead).has_value());
  auto unmap = std::async(std::launch::async, [&] { return backend().Unmap(kIova, kFourPages); });
  blocking.entered_.wait();

  std::atomic<bool> detached{false};
  auto detach = std::async(std::launch::async, [&] {
    backend().DetachListener(blocking);
    detached = true;
  });
  // Detach must still be waiting; give it time to (wrongly) return.
  EXPECT_EQ(detach.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  EXPECT_FALSE(detached);
  blocking.release_.count_down();

  detach.get();
  EXPECT_TRUE(unmap.get().has_value());
  EXPECT_EQ(account_->used(), 0u);
}

TEST_F(Type1UnmapTest, DetachReleasesTheListenersPinsByForce) {
  ASSERT_TRUE(backend().PinPages(listener_, kIova, 3, kProtRead).has_value());
  ASSERT_TRUE(backend().PinPages(listener_, kIova, 1, kProtRead).has_value());

  backend().DetachListener(listener_);

  EXPECT_EQ(backend().locked_bytes(), 0u);
  EXPECT_EQ(account_->used(), 0u);
  EXPECT_THAT(listener_.unmap_calls(), IsEmpty());
}

TEST_F(Type1UnmapTest, DetachedListenerIsNotNotified) {
  RecordingListener gone(backend());
  ASSERT_TRUE(backend().AttachListener(gone).has_value());
  backend().DetachListener(gone);
  ASSERT_TRUE(listener_.PinAndHold(kIova, 1).has_value());

  ASSERT_TRUE(backend().Unmap(kIova, kFourPages).has_value());

  EXPECT_THAT(gone.unmap_calls(), IsEmpty());
}

TEST_F(Type1UnmapTest, AttachingTwiceIsEexist) {
  auto attached = backend().AttachListener(listener_);

  ASSERT_FALSE(attached.has_value());
  EXPECT_EQ(attached.error().code, EEXIST);
}

TEST_F(Type1UnmapTest, DetachOfUnknownListenerIsANoop) {
  RecordingListener stranger(backend());

  backend().DetachListener(stranger);

  EXPECT_TRUE(listener_.PinAndHold(kIova, 1).has_value());
}

TEST_F(Type1UnmapTest, SplitOfPinnedMappingIsEinvalWithoutNotifying) {
  ASSERT_TRUE(listener_.PinAndHold(kIova, 1).has_value());

  auto unmapped = backend().Unmap(kIova, kPageSize);

  ASSERT_FALSE(unmapped.has_value());
  EXPECT_EQ(unmapped.error().code, EINVAL);
  EXPECT_THAT(listener_.unmap_calls(), IsEmpty());
}

TEST_F(Type1UnmapTest, BackendDestructionNotifiesAndReturnsAllCharges) {
  ASSERT_TRUE(listener_.PinAndHold(kIova, 4).has_value());

  backend_.reset();

  EXPECT_THAT(listener_.unmap_calls(), ElementsAre(Call{kIova, kFourPages}));
  EXPECT_EQ(account_->used(), 0u);
}

}  // namespace
}  // namespace umdev::pinning::testing
