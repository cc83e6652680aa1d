// Concurrent migration transitions, resets and data reads on one device,
// with and without the device being removed under them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "migration_test_util.h"
#include "umdev/mdev_core/migration.h"

namespace umdev {
namespace {

using ::testing::AnyOf;
using ::testing::Each;
using ::testing::Eq;
using ::umdev::testing::kMigUuid1;
using ::umdev::testing::MigrationFixture;

constexpr uint64_t kFlags = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | kVfioMigrationPreCopy;
constexpr vfio_device_mig_state kTargets[] = {
    VFIO_DEVICE_STATE_RUNNING, VFIO_DEVICE_STATE_STOP_COPY, VFIO_DEVICE_STATE_RESUMING,
    VFIO_DEVICE_STATE_STOP,    kVfioStatePreCopy,           VFIO_DEVICE_STATE_RUNNING_P2P};

// Each worker cycles through the targets, resets now and then and reads the
// stream, recording every errno it gets until |stop|.
void Hammer(DeviceFile& file, int worker, const std::atomic<bool>& stop, std::vector<int>& errnos) {
  std::vector<std::byte> buffer(64);
  for (int i = worker; !stop; ++i) {
    const auto target = kTargets[static_cast<size_t>(i) % std::size(kTargets)];
    if (auto r = file.SetMigrationState(target); !r.has_value()) errnos.push_back(r.error().code);
    if (i % 7 == 0) {
      if (auto r = file.Reset(); !r.has_value()) errnos.push_back(r.error().code);
    }
    if (auto r = file.MigrationRead(buffer); !r.has_value()) errnos.push_back(r.error().code);
    if (!errnos.empty() && errnos.back() == ENODEV) return;
  }
}

TEST(MigrationRaceTest, TransitionsAndResetsOnOneDeviceAreSerialized) {
  MigrationFixture fx({.migration_flags = kFlags});
  auto file = fx.Open(kMigUuid1);
  fx.fake(kMigUuid1).set_arc_hook([] { std::this_thread::yield(); });
  std::atomic<bool> stop{false};
  std::vector<std::vector<int>> errnos(4);
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&, w] { Hammer(*file, w, stop, errnos[static_cast<size_t>(w)]); });
  }
  // Bounded by work done, not by time: enough arcs for the walks to overlap.
  while (fx.fake(kMigUuid1).arcs().size() < 2000) std::this_thread::yield();
  stop = true;
  for (auto& t : workers) t.join();
  EXPECT_EQ(fx.fake(kMigUuid1).max_concurrent_arcs(), 1);
  EXPECT_EQ(fx.fake(kMigUuid1).resets_during_arcs(), 0);
  EXPECT_EQ(fx.fake(kMigUuid1).illegal_arcs(), 0);
  // Reads outside saving states, STOP_COPY -> PRE_COPY, and PRE_COPY's
  // temporary end of stream are the only failures.
  for (const auto& codes : errnos) EXPECT_THAT(codes, Each(AnyOf(Eq(EINVAL), Eq(ENOMSG))));
}

TEST(MigrationRaceTest, RemovalRevokesHandlesInTheMiddleOfTransitions) {
  for (int round = 0; round < 20; ++round) {
    MigrationFixture fx({.migration_flags = kFlags});
    auto file = fx.Open(kMigUuid1);
    auto counters = fx.parent().counters();
    std::atomic<int> arcs_after_close{0};
    fx.fake(kMigUuid1).set_arc_hook([&] {
      if (counters->closes > 0) ++arcs_after_close;
      std::this_thread::yield();
    });
    std::atomic<bool> stop{false};
    std::vector<std::vector<int>> errnos(3);
    std::vector<std::thread> workers;
    for (int w = 0; w < 3; ++w) {
      workers.emplace_back([&, w] { Hammer(*file, w, stop, errnos[static_cast<size_t>(w)]); });
    }
    // The handle is never released, so removal revokes it after the bound.
    ASSERT_TRUE(fx.registry().RemoveMdev(kMigUuid1).has_value());
    for (auto& t : workers) t.join();
    EXPECT_EQ(counters->removed, 1);
    EXPECT_EQ(counters->closes, 1);
    EXPECT_EQ(arcs_after_close, 0);
    for (const auto& codes : errnos) {
      ASSERT_FALSE(codes.empty());
      EXPECT_EQ(codes.back(), ENODEV);
      EXPECT_THAT(codes, Each(AnyOf(Eq(EINVAL), Eq(ENOMSG), Eq(ENODEV))));
    }
    EXPECT_EQ(file->SetMigrationState(VFIO_DEVICE_STATE_STOP).error().code, ENODEV);
  }
}

}  // namespace
}  // namespace umdev
