// Races on the registry and on device lifetimes: concurrent create/remove,
// parent unregistration, open/close and DMA against removal. Meant for TSan:
// every loop is bounded by an iteration count, and no sleep decides an outcome.
#include "umdev/mdev_core/registry.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/vfio.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <functional>
#include <latch>
#include <thread>
#include <vector>

#include "fakes/fake_iommu.h"
#include "fakes/test_parent.h"
#include "umdev/common/log.h"

namespace umdev {
namespace {

using ::testing::AnyOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::Field;
using ::testing::UnorderedElementsAre;
using ::umdev::testing::FakeIommu;
using ::umdev::testing::FakeIommuDriver;
using ::umdev::testing::TestDevice;
using ::umdev::testing::TestParentDriver;
using namespace std::chrono_literals;

constexpr uint64_t kIova = 0x100000;

// A distinct, valid UUID per (a, b).
Uuid MakeUuid(unsigned a, unsigned b) {
  return Uuid::Parse(fmt::format("{:08x}-0000-4000-8000-{:012x}", a, b)).value();
}

template <typename T>
int ErrnoOf(const Result<T>& result) {
  return result.has_value() ? 0 : result.error().code;
}

// Runs fn(0) .. fn(n - 1) on n threads released together; returns once all
// have finished.
void RunConcurrently(int n, const std::function<void(int)>& fn) {
  std::latch start(n);
  std::vector<std::jthread> threads;
  threads.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      fn(i);
    });
  }
}

// Yields until |done| holds, at most |max_yields| times. Only widens race
// windows or waits for progress; no outcome depends on it returning true.
template <typename Pred>
void YieldUntil(Pred done, int max_yields = 200000) {
  for (int i = 0; i < max_yields && !done(); ++i) std::this_thread::yield();
}

std::vector<int> Flatten(const std::vector<std::vector<int>>& per_thread) {
  std::vector<int> all;
  for (const auto& codes : per_thread) all.insert(all.end(), codes.begin(), codes.end());
  return all;
}

int CountOf(const std::vector<int>& codes, int code) {
  return static_cast<int>(std::count(codes.begin(), codes.end(), code));
}

class RegistryRaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Hundreds of create/remove lines would bury a TSan report.
    ASSERT_TRUE(SetLogLevel("warn").has_value());
    ASSERT_TRUE(registry_.iommu_drivers().Register(iommu_driver_).has_value());
  }

  std::shared_ptr<TestParentDriver> AddParent(TestParentDriver::Options options = {}) {
    auto parent = std::make_shared<TestParentDriver>(std::move(options));
    EXPECT_TRUE(registry_.RegisterParent(parent).has_value());
    return parent;
  }

  // Opens the group of |uuid| and puts it in a new container with a backend.
  std::shared_ptr<GroupFile> OpenInContainer(const Uuid& uuid) {
    auto file = registry_.FindGroupOf(uuid).value()->Open().value();
    container_ = registry_.CreateContainer();
    EXPECT_TRUE(file->SetContainer(container_).has_value());
    EXPECT_TRUE(container_->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
    return file;
  }

  FakeIommu& iommu() { return static_cast<FakeIommu&>(*container_->iommu()); }

  Registry registry_{RegistryOptions{.removal_bound = 50ms, .request_interval = 5ms}};
  std::shared_ptr<FakeIommuDriver> iommu_driver_ = std::make_shared<FakeIommuDriver>();
  std::shared_ptr<Container> container_;
};

TEST_F(RegistryRaceTest, SharedCounterAdmitsExactlyMaxInstances) {
  auto parent = AddParent({.max_instances = 3});
  constexpr int kThreads = 8;
  std::vector<int> codes(kThreads, -1);
  RunConcurrently(kThreads, [&](int i) {
    // Both types draw on the one shared counter.
    codes[i] = ErrnoOf(registry_.CreateMdev("test_parent", i % 2 == 0 ? "test-a" : "test-b",
                                            MakeUuid(1, static_cast<unsigned>(i))));
  });
  EXPECT_EQ(CountOf(codes, 0), 3);
  EXPECT_EQ(CountOf(codes, EUSERS), kThreads - 3);
  EXPECT_EQ(parent->probes(), 3);  // Refused creations never reach the vendor.
  EXPECT_EQ(registry_.Mdevs().size(), 3u);
  const auto full = registry_.Parents();
  for (const auto& type : full.at(0).types) EXPECT_EQ(type.available_instances, 0u);

  for (int i = 0; i < kThreads; ++i) {
    if (codes[i] == 0) {
      EXPECT_TRUE(registry_.RemoveMdev(MakeUuid(1, static_cast<unsigned>(i))).has_value());
    }
  }
  EXPECT_EQ(parent->counters()->removed, 3);
  EXPECT_TRUE(registry_.Mdevs().empty());
  const auto empty = registry_.Parents();
  for (const auto& type : empty.at(0).types) EXPECT_EQ(type.available_instances, 3u);
}

TEST_F(RegistryRaceTest, SameUuidIsCreatedOnce) {
  auto parent = AddParent();
  constexpr int kThreads = 8;
  const Uuid uuid = MakeUuid(2, 0);
  std::atomic<int> losers{0};
  int remove_while_creating = -1;
  int find_while_creating = -1;
  parent->set_probe_hook([&] {
    // Hold the winner in Probe() until every other creator has been answered.
    YieldUntil([&] { return losers.load(std::memory_order_relaxed) == kThreads - 1; });
    remove_while_creating = ErrnoOf(registry_.RemoveMdev(uuid));
    find_while_creating = ErrnoOf(registry_.FindMdev(uuid));
  });
  std::vector<int> codes(kThreads, -1);
  RunConcurrently(kThreads, [&](int i) {
    codes[i] = ErrnoOf(registry_.CreateMdev("test_parent", "test-a", uuid));
    if (codes[i] != 0) losers.fetch_add(1, std::memory_order_relaxed);
  });
  EXPECT_EQ(CountOf(codes, 0), 1);
  EXPECT_EQ(CountOf(codes, EEXIST), kThreads - 1);
  EXPECT_EQ(parent->probes(), 1);
  EXPECT_EQ(remove_while_creating, EAGAIN);  // Still being created.
  EXPECT_EQ(find_while_creating, ENODEV);    // Not active yet.
  EXPECT_THAT(registry_.Mdevs(), ElementsAre(Field(&MdevStatus::uuid, uuid)));
  EXPECT_EQ(registry_.Parents()[0].types[0].available_instances, 3u);
}

TEST_F(RegistryRaceTest, LastInstanceWithoutSharedCounterIsDecidedByTheDriver) {
  auto parent = AddParent({.max_instances = 0, .per_type_capacity = 1});
  constexpr int kThreads = 8;
  std::atomic<int> in_probe{0};
  parent->set_probe_hook([&] {
    // Line every probe up before the driver checks its capacity.
    in_probe.fetch_add(1, std::memory_order_relaxed);
    YieldUntil([&] { return in_probe.load(std::memory_order_relaxed) == kThreads; });
  });
  std::vector<int> codes(kThreads, -1);
  RunConcurrently(kThreads, [&](int i) {
    const Uuid uuid = MakeUuid(3, static_cast<unsigned>(i));
    codes[i] = ErrnoOf(registry_.CreateMdev("test_parent", "test-a", uuid));
  });
  EXPECT_EQ(CountOf(codes, 0), 1);
  EXPECT_EQ(CountOf(codes, ENOSPC), kThreads - 1);
  EXPECT_EQ(parent->probes(), kThreads);  // The core does not refuse: the driver does.
  ASSERT_EQ(registry_.Mdevs().size(), 1u);
  const auto types = registry_.Parents()[0].types;
  EXPECT_EQ(types[0].available_instances, 0u);
  EXPECT_EQ(types[1].available_instances, 1u);
  // Failed probes leave nothing behind.
  for (int i = 0; i < kThreads; ++i) {
    if (codes[i] != 0) {
      EXPECT_EQ(registry_.FindMdev(MakeUuid(3, static_cast<unsigned>(i))).error().code, ENODEV);
    }
  }
}

TEST_F(RegistryRaceTest, ConcurrentRemovesTearDownOnce) {
  auto parent = AddParent();
  constexpr int kThreads = 6;
  constexpr int kRounds = 20;
  std::vector<int> all_codes;
  for (int round = 0; round < kRounds; ++round) {
    const Uuid uuid = MakeUuid(4, static_cast<unsigned>(round));
    ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", uuid).has_value());
    std::vector<int> codes(kThreads, -1);
    RunConcurrently(kThreads, [&](int i) { codes[i] = ErrnoOf(registry_.RemoveMdev(uuid)); });
    EXPECT_EQ(CountOf(codes, 0), 1) << "round " << round;
    EXPECT_EQ(parent->counters()->removed, round + 1) << "round " << round;
    EXPECT_EQ(parent->device(uuid), nullptr);
    all_codes.insert(all_codes.end(), codes.begin(), codes.end());
  }
  // Losers see the instance being removed (EAGAIN) or already gone (ENODEV).
  EXPECT_THAT(all_codes, Each(AnyOf(Eq(0), Eq(EAGAIN), Eq(ENODEV))));
  EXPECT_EQ(CountOf(all_codes, 0), kRounds);
  EXPECT_TRUE(registry_.Mdevs().empty());
  EXPECT_EQ(registry_.Parents()[0].types[0].available_instances, 4u);
}

TEST_F(RegistryRaceTest, UnregisterParentWhileCreatingAndRemoving) {
  auto bystander = AddParent({.parent_name = "bystander"});
  const Uuid kept = MakeUuid(5, 999);
  ASSERT_TRUE(registry_.CreateMdev("bystander", "test-a", kept).has_value());

  constexpr int kRounds = 4;
  constexpr int kWorkers = 4;
  constexpr int kUnregisterers = 2;
  constexpr int kIterations = 60;
  constexpr unsigned kPool = 6;  // Shared UUIDs: creators collide, removers too.
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    auto parent = AddParent({.parent_name = "racy", .max_instances = 3});
    // Lengthen creation so that unregistration finds probes in progress.
    parent->set_probe_hook([] {
      for (int i = 0; i < 10; ++i) std::this_thread::yield();
    });
    std::atomic<int> created{0};
    std::vector<std::vector<int>> create_errnos(kWorkers);
    std::vector<std::vector<int>> remove_errnos(kWorkers);
    std::vector<int> creates(kWorkers, 0);
    std::vector<int> unregister_codes(kUnregisterers, -1);
    RunConcurrently(kWorkers + kUnregisterers, [&](int t) {
      if (t >= kWorkers) {
        // Let the workers get going; a later round unregisters later.
        YieldUntil([&] {
          return created.load(std::memory_order_relaxed) >= kWorkers * (2 + 2 * round);
        });
        unregister_codes[t - kWorkers] = ErrnoOf(registry_.UnregisterParent("racy"));
        return;
      }
      for (int it = 0; it < kIterations; ++it) {
        const Uuid uuid = MakeUuid(5, static_cast<unsigned>(t * 5 + it) % kPool);
        const int create =
            ErrnoOf(registry_.CreateMdev("racy", it % 2 == 0 ? "test-a" : "test-b", uuid));
        if (create == 0) {
          ++creates[t];
          created.fetch_add(1, std::memory_order_relaxed);
        } else {
          create_errnos[t].push_back(create);
        }
        // Remove whether or not this thread made it: another may have.
        if (const int remove = ErrnoOf(registry_.RemoveMdev(uuid)); remove != 0) {
          remove_errnos[t].push_back(remove);
        }
      }
    });

    EXPECT_THAT(unregister_codes, UnorderedElementsAre(0, ENODEV));
    EXPECT_THAT(Flatten(create_errnos), Each(AnyOf(Eq(ENODEV), Eq(EEXIST), Eq(EUSERS))));
    EXPECT_THAT(Flatten(remove_errnos), Each(AnyOf(Eq(ENODEV), Eq(EAGAIN))));
    int total_creates = 0;
    for (int c : creates) total_creates += c;
    EXPECT_GT(total_creates, 0);
    // Every probe made a device, and every device was destroyed exactly once.
    EXPECT_EQ(parent->probes(), total_creates);
    EXPECT_EQ(parent->counters()->removed, total_creates);
    for (unsigned i = 0; i < kPool; ++i) EXPECT_EQ(parent->device(MakeUuid(5, i)), nullptr);
    EXPECT_THAT(registry_.Mdevs(), ElementsAre(Field(&MdevStatus::uuid, kept)));
    EXPECT_THAT(registry_.Parents(), ElementsAre(Field(&ParentStatus::name, "bystander")));
    EXPECT_EQ(registry_.CreateMdev("racy", "test-a", MakeUuid(5, 0)).error().code, ENODEV);
    // The next round registers the name again.
  }
  EXPECT_EQ(bystander->counters()->removed, 0);
}

TEST_F(RegistryRaceTest, OpenCloseChurnRacesRemoval) {
  auto parent = AddParent();
  const Uuid uuid = MakeUuid(6, 0);
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", uuid).has_value());
  auto file = OpenInContainer(uuid);
  const auto& counters = parent->counters();

  constexpr int kUsers = 4;
  constexpr int kIterations = 100;
  std::atomic<int> opened{0};
  std::vector<std::vector<int>> errnos(kUsers);
  std::vector<int> not_open_in_vendor(kUsers, 0);
  int remove_code = -1;
  RunConcurrently(kUsers + 1, [&](int t) {
    if (t == kUsers) {
      // Half the opens done: removal lands in the middle of the churn.
      YieldUntil([&] {
        return opened.load(std::memory_order_relaxed) >= kUsers * kIterations / 2;
      });
      remove_code = ErrnoOf(registry_.RemoveMdev(uuid));
      return;
    }
    for (int it = 0; it < kIterations; ++it) {
      auto device = file->GetDeviceFd(uuid.ToString());
      if (!device.has_value()) {
        errnos[t].push_back(device.error().code);
        continue;
      }
      opened.fetch_add(1, std::memory_order_relaxed);
      const int opens = counters->opens;
      const int closes = counters->closes;
      // A call that succeeds proves the handle was not revoked before the
      // counters were read: the vendor must then have been open.
      if (auto info = (*device)->GetInfo(); info.has_value()) {
        if (opens - closes != 1) ++not_open_in_vendor[t];
      } else {
        errnos[t].push_back(info.error().code);
      }
      std::array<std::byte, 4> bytes{};
      if (auto read = (*device)->RegionRead(VFIO_PCI_CONFIG_REGION_INDEX, 0, bytes); !read) {
        errnos[t].push_back(read.error().code);
      }
      device->reset();  // Close, racing the other users' first opens and last closes.
    }
  });

  EXPECT_EQ(remove_code, 0);
  EXPECT_THAT(Flatten(errnos), Each(Eq(ENODEV)));
  EXPECT_THAT(not_open_in_vendor, Each(Eq(0)));
  EXPECT_GE(counters->opens, 1);
  EXPECT_EQ(counters->opens, counters->closes);
  EXPECT_EQ(counters->removed, 1);
  EXPECT_EQ(registry_.FindMdev(uuid).error().code, ENODEV);
  EXPECT_EQ(file->GetDeviceFd(uuid.ToString()).error().code, ENODEV);
  EXPECT_EQ(iommu().listeners(), 0u);
  file.reset();
  EXPECT_EQ(container_->group_count(), 0u);
  EXPECT_EQ(iommu_driver_->live_backends(), 0);
}

TEST_F(RegistryRaceTest, RevocationRacesCallsInFlight) {
  auto parent = AddParent();
  const Uuid uuid = MakeUuid(7, 0);
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", uuid).has_value());
  auto file = OpenInContainer(uuid);
  const auto& counters = parent->counters();
  // Never released while removal waits, so removal must revoke.
  auto stubborn = file->GetDeviceFd(uuid.ToString()).value();

  constexpr int kUsers = 4;
  constexpr int kMaxCalls = 200000;
  std::atomic<int> opened{0};
  std::vector<std::vector<int>> errnos(kUsers);
  std::vector<int> revoked(kUsers, 0);
  int remove_code = -1;
  RunConcurrently(kUsers + 1, [&](int t) {
    if (t == kUsers) {
      YieldUntil([&] { return opened.load(std::memory_order_relaxed) == kUsers; });
      remove_code = ErrnoOf(registry_.RemoveMdev(uuid));
      return;
    }
    auto device = file->GetDeviceFd(uuid.ToString());
    if (!device.has_value()) {
      errnos[t].push_back(device.error().code);
      return;
    }
    opened.fetch_add(1, std::memory_order_relaxed);
    // Keep calling until the handle is revoked (or the count runs out).
    std::array<std::byte, 4> bytes{};
    for (int call = 0; call < kMaxCalls; ++call) {
      auto read = (*device)->RegionRead(VFIO_PCI_CONFIG_REGION_INDEX, 0, bytes);
      if (!read.has_value()) {
        errnos[t].push_back(read.error().code);
        ++revoked[t];
        break;
      }
    }
    device->reset();  // A revoked handle closes as a no-op.
    if (auto again = file->GetDeviceFd(uuid.ToString()); !again.has_value()) {
      errnos[t].push_back(again.error().code);
    }
  });

  EXPECT_EQ(remove_code, 0);
  EXPECT_THAT(Flatten(errnos), Each(Eq(ENODEV)));
  EXPECT_EQ(stubborn->GetInfo().error().code, ENODEV);
  stubborn.reset();
  EXPECT_GE(counters->requests, 1);
  EXPECT_EQ(counters->opens, 1);   // Every handle shared the one first open...
  EXPECT_EQ(counters->closes, 1);  // ...closed once, on the users' behalf.
  EXPECT_EQ(counters->removed, 1);
  EXPECT_EQ(iommu().listeners(), 0u);
  file.reset();
  EXPECT_EQ(container_->group_count(), 0u);
  EXPECT_EQ(iommu_driver_->live_backends(), 0);
}

TEST_F(RegistryRaceTest, VendorDmaRacesUnmapAndClose) {
  auto parent = AddParent();
  const Uuid uuid = MakeUuid(8, 0);
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", uuid).has_value());
  auto file = OpenInContainer(uuid);
  constexpr uint64_t kPages = 4;
  const auto map = [&] {
    return iommu().Map({.iova = kIova, .size = kPages * kPageSize,
                        .prot = kProtRead | kProtWrite, .fd = {}, .offset = 0});
  };
  ASSERT_TRUE(map().has_value());
  auto device = file->GetDeviceFd(uuid.ToString()).value();
  TestDevice& vendor = *parent->device(uuid);
  const auto& counters = parent->counters();

  constexpr int kDmaThreads = 3;
  constexpr int kDmaIterations = 300;
  constexpr int kUnmapRounds = 40;
  constexpr int kDmaPerRound = kDmaThreads * kDmaIterations / kUnmapRounds;
  std::atomic<int> dma_done{0};
  std::atomic<int> unmap_rounds{0};
  std::vector<std::vector<int>> dma_errnos(kDmaThreads);
  std::vector<int> unmap_errnos;
  // Threads 0..2: the vendor's DMA; 3: the user's unmaps; 4: the user's close.
  RunConcurrently(kDmaThreads + 2, [&](int t) {
    if (t == kDmaThreads) {
      for (int round = 0; round < kUnmapRounds; ++round) {
        // Pace the unmaps by the DMA done, so that they spread over all of it.
        YieldUntil([&] {
          return dma_done.load(std::memory_order_relaxed) >= round * kDmaPerRound;
        }, 20000);
        if (auto unmapped = iommu().Unmap(kIova, kPages * kPageSize); !unmapped) {
          unmap_errnos.push_back(unmapped.error().code);
        }
        if (auto mapped = map(); !mapped) unmap_errnos.push_back(mapped.error().code);
        unmap_rounds.fetch_add(1, std::memory_order_relaxed);
      }
      return;
    }
    if (t == kDmaThreads + 1) {
      // Close halfway through, between unmaps and while the vendor pins.
      YieldUntil([&] { return unmap_rounds.load(std::memory_order_relaxed) >= kUnmapRounds / 2; });
      device.reset();
      return;
    }
    for (int it = 0; it < kDmaIterations; ++it) {
      // Keep pace with the unmaps, so that both spread over the whole test.
      YieldUntil([&] {
        return unmap_rounds.load(std::memory_order_relaxed) >= it * kUnmapRounds / kDmaIterations;
      }, 2000);
      const uint64_t iova = kIova + static_cast<uint64_t>(it % kPages) * kPageSize;
      std::array<std::byte, 8> bytes{};
      Result<void> result;
      switch (it % 3) {
        case 0:
          result = vendor.PinAndHold(iova, 1, kProtRead | kProtWrite);
          break;
        case 1:
          result = vendor.dma().DmaWrite(iova + 16, bytes);
          break;
        default:
          result = vendor.dma().DmaRead(iova + 16, bytes);
          break;
      }
      if (!result.has_value()) dma_errnos[t].push_back(result.error().code);
      dma_done.fetch_add(1, std::memory_order_relaxed);
    }
  });

  EXPECT_TRUE(unmap_errnos.empty()) << unmap_errnos.size() << " unmap/map failures";
  // EFAULT: unmapped at that moment; EINVAL: closed (no backend, or detached).
  EXPECT_THAT(Flatten(dma_errnos), Each(AnyOf(Eq(EFAULT), Eq(EINVAL))));
  EXPECT_EQ(counters->opens, 1);
  EXPECT_EQ(counters->closes, 1);
  EXPECT_EQ(iommu().pinned_pages(), 0u);
  EXPECT_EQ(iommu().listeners(), 0u);
  // Closed: the vendor can no longer pin.
  EXPECT_EQ(vendor.PinAndHold(kIova, 1, kProtRead).error().code, EINVAL);
  EXPECT_EQ(iommu().pinned_pages(), 0u);
  file.reset();
  EXPECT_EQ(iommu_driver_->live_backends(), 0);
}

}  // namespace
}  // namespace umdev
