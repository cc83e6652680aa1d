// Type1Backend's translation cache: a copy through a remembered mapping is
// never made after that mapping's unmap has returned (a remap at the same
// IOVA is seen, an unmapped IOVA faults, another backend at the same
// address is not confused with the old one), writes are tracked once dirty
// tracking starts, and the invariant holds under concurrent unmaps (TSan
// and ASan run this).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <optional>
#include <thread>

#include "type1_test_util.h"

namespace umdev::pinning::testing {
namespace {

using ::testing::ElementsAre;

std::byte ReadOne(Type1Backend& backend, uint64_t iova) {
  std::byte value{};
  EXPECT_TRUE(backend.DmaRead(iova, std::span(&value, 1)).has_value());
  return value;
}

TEST_F(Type1Test, ARemapAtTheSameIovaIsSeenByTheNextCopy) {
  GuestMemory other(2);
  memory_.WriteByte(0, std::byte{0x11});
  other.WriteByte(0, std::byte{0x22});
  ASSERT_TRUE(backend().Map(memory_.Request(kIova, kPageSize)).has_value());
  EXPECT_EQ(ReadOne(backend(), kIova), std::byte{0x11});
  EXPECT_EQ(ReadOne(backend(), kIova), std::byte{0x11});  // Now through the cache.
  ASSERT_TRUE(backend().Unmap(kIova, kPageSize).has_value());
  std::byte value{};
  EXPECT_EQ(backend().DmaRead(kIova, std::span(&value, 1)).error().code, EFAULT);
  ASSERT_TRUE(backend().Map(other.Request(kIova, kPageSize)).has_value());
  EXPECT_EQ(ReadOne(backend(), kIova), std::byte{0x22});
}

TEST_F(Type1Test, CachedCopiesKeepTheMappingsBoundsAndRights) {
  ASSERT_TRUE(backend().Map(memory_.Request(kIova, kPageSize, kProtRead)).has_value());
  EXPECT_EQ(ReadOne(backend(), kIova), std::byte{0});
  // Past the end of the cached mapping, and a write to a read-only one.
  auto two = Bytes(2, 0);
  EXPECT_EQ(backend().DmaRead(kIova + kPageSize - 1, two).error().code, EFAULT);
  EXPECT_EQ(backend().DmaWrite(kIova, Bytes(1, 7)).error().code, EPERM);
  EXPECT_EQ(backend().DmaRead(kIova + kPageSize, two).error().code, EFAULT);
  EXPECT_EQ(memory_.ReadByte(0), std::byte{0});
}

TEST_F(Type1Test, AnIovaOutsideTheCachedMappingIsNotTranslatedByIt) {
  ASSERT_TRUE(backend().Map(memory_.Request(kIova, kPageSize)).has_value());
  EXPECT_EQ(ReadOne(backend(), kIova), std::byte{0});
  // Thousands of unmapped pages above and below: some share the cached
  // mapping's slot, and each must fault, not land beside the mapping.
  std::byte value{};
  for (uint64_t page = 1; page <= 4096; ++page) {
    ASSERT_EQ(backend().DmaRead(kIova + page * kPageSize, std::span(&value, 1)).error().code, EFAULT);
    ASSERT_EQ(backend().DmaRead(kIova - page * kPageSize, std::span(&value, 1)).error().code, EFAULT);
  }
}

TEST_F(Type1Test, WritesThroughTheCacheAreTrackedOnceTrackingStarts) {
  ASSERT_TRUE(backend().Map(memory_.Request(kIova, kFourPages)).has_value());
  ASSERT_TRUE(backend().DmaWrite(kIova + kPageSize, Bytes(1, 1)).has_value());
  ASSERT_TRUE(backend().DmaWrite(kIova + kPageSize, Bytes(1, 2)).has_value());  // Cached.
  ASSERT_TRUE(backend().StartDirtyTracking(kPageSize).has_value());
  ASSERT_TRUE(backend().DmaWrite(kIova + kPageSize, Bytes(1, 3)).has_value());  // The cached page.
  EXPECT_THAT(backend().ReadAndClearDirty(kIova, kFourPages, kPageSize).value(), ElementsAre(0b10u));
  ASSERT_TRUE(backend().StopDirtyTracking().has_value());
  ASSERT_TRUE(backend().DmaWrite(kIova + 3 * kPageSize, Bytes(1, 4)).has_value());
  EXPECT_EQ(memory_.ReadByte(3 * kPageSize), std::byte{4});
}

TEST(Type1TranslationCacheTest, ABackendAtAnOldOnesAddressDoesNotUseItsTranslations) {
  auto account = std::make_shared<LockedMemoryAccount>(kFourPages);
  GuestMemory first(1), second(1);
  first.WriteByte(0, std::byte{0x33});
  second.WriteByte(0, std::byte{0x44});
  // The same storage for both: the second backend is where the first was.
  std::optional<Type1Backend> backend;
  backend.emplace(account);
  ASSERT_TRUE(backend->Map(first.Request(kIova, kPageSize)).has_value());
  EXPECT_EQ(ReadOne(*backend, kIova), std::byte{0x33});
  EXPECT_EQ(ReadOne(*backend, kIova), std::byte{0x33});
  backend.reset();
  // Something else takes the address the first mapping had, so that a
  // stale translation would not find the second memory there by chance.
  void* taken = ::mmap(nullptr, kPageSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(taken, MAP_FAILED);
  backend.emplace(account);
  ASSERT_TRUE(backend->Map(second.Request(kIova, kPageSize)).has_value());
  EXPECT_EQ(ReadOne(*backend, kIova), std::byte{0x44});
  ::munmap(taken, kPageSize);
}

// A guest IOMMU maps, uses and unmaps per I/O: past the budget the backend
// stops caching, so most of those unmaps need no barrier, and copies stay
// right.
TEST_F(Type1Test, MappingChurnStopsCachingInsteadOfPayingABarrierPerUnmap) {
  constexpr int kRounds = 2000;
  memory_.WriteByte(0, std::byte{0x5a});
  for (int round = 0; round < kRounds; ++round) {
    ASSERT_TRUE(backend().Map(memory_.Request(kIova, kPageSize)).has_value());
    ASSERT_EQ(ReadOne(backend(), kIova), std::byte{0x5a});
    ASSERT_EQ(ReadOne(backend(), kIova), std::byte{0x5a});
    ASSERT_TRUE(backend().Unmap(kIova, kPageSize).has_value());
  }
  // Every round invalidated until the budget ran out, then (within the
  // second or so the loop takes) almost none did.
  EXPECT_GE(backend().translation_invalidations(), Type1Limits{}.max_cache_invalidations_per_second);
  EXPECT_LT(backend().translation_invalidations(), static_cast<uint64_t>(kRounds));
}

// One thread keeps copying from an IOVA while another maps and unmaps it,
// alternating between two memories. After each unmap returns, the unmapped
// memory is overwritten with a poison byte (through its own mapping): a copy
// that used a stale translation after the unmap would read it.
TEST(Type1TranslationCacheTest, NoCopyUsesAMappingAfterItsUnmapReturns) {
  auto account = std::make_shared<LockedMemoryAccount>(kFourPages);
  // Every round's unmap invalidates: no budget stops the caching midway.
  Type1Backend backend(account, {.max_cache_invalidations_per_second = 1'000'000});
  GuestMemory memories[2] = {GuestMemory(1), GuestMemory(1)};
  constexpr std::byte kGood[2] = {std::byte{0xa1}, std::byte{0xb2}};
  constexpr std::byte kPoison{0xee};
  std::atomic<bool> done{false};
  std::atomic<int> poisoned{0};
  std::atomic<int> copied{0};
  std::thread reader([&] {
    while (!done.load()) {
      std::byte value{};
      if (backend.DmaRead(kIova, std::span(&value, 1)).has_value()) {
        ++copied;
        if (value == kPoison) ++poisoned;
      }
    }
  });
  for (int round = 0; round < 2000; ++round) {
    const int which = round % 2;
    memories[which].WriteByte(0, kGood[which]);
    ASSERT_TRUE(backend.Map(memories[which].Request(kIova, kPageSize)).has_value());
    for (int i = 0; i < 50 && copied.load() == 0; ++i) std::this_thread::yield();
    ASSERT_TRUE(backend.Unmap(kIova, kPageSize).has_value());
    memories[which].WriteByte(0, kPoison);
  }
  done = true;
  reader.join();
  EXPECT_GT(copied.load(), 0);
  EXPECT_EQ(poisoned.load(), 0);
  EXPECT_GT(backend.translation_invalidations(), 0u);
}

}  // namespace
}  // namespace umdev::pinning::testing
