// Type1Backend under contention: copies and pins racing unmap and remap of the same range.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "type1_test_util.h"

namespace umdev::pinning::testing {
namespace {

// Enough remaps for copies to hit every phase of an unmap, yet a few hundred
// milliseconds under TSan.
constexpr int kRemaps = 1500;
constexpr int kWorkers = 3;
constexpr size_t kSlice = 1024;

// Two adjacent mappings, [kIova, +2 pages) and [kIova + 2 pages, +2 pages),
// each from its own memfd, so remapping finds the same bytes again.
class Type1ConcurrencyTest : public Type1Test {
 protected:
  void MapBoth() {
    ASSERT_TRUE(backend().Map(first_.Request(kIova, kTwoPages)).has_value());
    ASSERT_TRUE(backend().Map(second_.Request(kIova + kTwoPages, kTwoPages)).has_value());
  }
  void RemapLoop() {
    for (int i = 0; i < kRemaps; ++i) {
      auto unmapped = backend().Unmap(kIova, 2 * kTwoPages);
      ASSERT_TRUE(unmapped.has_value()) << unmapped.error().Describe();
      MapBoth();
    }
    done_ = true;
  }

  GuestMemory first_{2};
  GuestMemory second_{2};
  std::atomic<bool> done_{false};
};

// Worker |index| owns bytes [slice, slice + kSlice) around the boundary of the
// two mappings (the middle worker straddles it), so workers never race each
// other on guest memory, only on the backend.
TEST_F(Type1ConcurrencyTest, CopiesRacingUnmapAndRemapNeverFaultOrMisroute) {
  MapBoth();
  std::atomic<int> unexpected{0};
  auto worker = [&](int index) {
    const uint64_t slice = kIova + kTwoPages - kSlice * 3 / 2 + index * kSlice;
    std::vector<std::byte> data(kSlice), out(kSlice);
    for (uint8_t pattern = 1; !done_; ++pattern) {
      std::memset(data.data(), pattern, data.size());
      auto written = backend().DmaWrite(slice, data);
      auto read = backend().DmaRead(slice, out);
      for (const auto* result : {&written, &read}) {
        if (!result->has_value() && result->error().code != EFAULT) ++unexpected;
      }
      if (written.has_value() && read.has_value()) {
        // Same memfds after every remap: a successful round trip sees its write.
        if (out != data) ++unexpected;
      }
    }
  };
  std::vector<std::thread> workers;
  for (int i = 0; i < kWorkers; ++i) workers.emplace_back(worker, i);

  RemapLoop();
  for (auto& thread : workers) thread.join();

  EXPECT_EQ(unexpected, 0);
}

// A device as vendor drivers write them (KVM-GT's cache_lock): it uses pinned
// pages and unpins them under its own lock, which its callbacks take too, so
// no use of a page outlives the callback that takes it away.
class Device : public DmaUnmapListener {
 public:
  explicit Device(IommuBackend& backend) : backend_(backend) {}

  // Pins two pages, writes to them and keeps them pinned. Returns the errno.
  int PinAndUse(uint64_t iova) {
    std::lock_guard lock(mu_);
    auto pinned = backend_.PinPages(*this, iova, 2, kProtRw);
    if (!pinned.has_value()) return pinned.error().code;
    for (void* page : *pinned) std::memset(page, 1, 8);
    held_.push_back(iova);
    return 0;
  }
  void UnpinAll() {
    std::lock_guard lock(mu_);
    for (uint64_t iova : held_) backend_.UnpinPages(*this, iova, 2);
    held_.clear();
  }
  void OnDmaUnmap(uint64_t, uint64_t) override { UnpinAll(); }
  void OnPinsRevoked(uint64_t, uint64_t) override {
    std::lock_guard lock(mu_);
    held_.clear();
  }

 private:
  IommuBackend& backend_;
  std::mutex mu_;
  std::vector<uint64_t> held_;
};

TEST_F(Type1ConcurrencyTest, PinsRacingUnmapAndRemapReturnEveryCharge) {
  MapBoth();
  Device device(backend());
  ASSERT_TRUE(backend().AttachListener(device).has_value());
  // The straddling pin works when nothing races it; how many succeed during
  // the race depends on scheduling, so only the outcome classes are checked.
  ASSERT_EQ(device.PinAndUse(kIova + kTwoPages - kPageSize), 0);
  device.UnpinAll();
  std::atomic<int> unexpected{0};
  std::thread device_thread([&] {
    while (!done_) {
      // Straddles the two mappings.
      const int error = device.PinAndUse(kIova + kTwoPages - kPageSize);
      if (error != 0 && error != EFAULT) ++unexpected;
      device.UnpinAll();
    }
  });

  RemapLoop();
  device_thread.join();

  EXPECT_EQ(unexpected, 0);
  backend().DetachListener(device);
  EXPECT_EQ(backend().locked_bytes(), 0u);
  EXPECT_EQ(account_->used(), 0u);
}

}  // namespace
}  // namespace umdev::pinning::testing
