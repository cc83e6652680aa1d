// DeviceFile's migration v2 calls: feature errnos, state walks, the data
// streams, reset from ERROR, revocation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "migration_test_util.h"
#include "umdev/mdev_core/migration.h"

namespace umdev {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;
using ::umdev::testing::kMigUuid1;
using ::umdev::testing::kMigUuid2;
using ::umdev::testing::MigrationFixture;
using ::umdev::testing::TestDevice;

constexpr uint64_t kStopCopy = VFIO_MIGRATION_STOP_COPY;
constexpr auto kError = VFIO_DEVICE_STATE_ERROR;
constexpr auto kStop = VFIO_DEVICE_STATE_STOP;
constexpr auto kRunning = VFIO_DEVICE_STATE_RUNNING;
constexpr auto kStopCopyState = VFIO_DEVICE_STATE_STOP_COPY;
constexpr auto kResuming = VFIO_DEVICE_STATE_RESUMING;
constexpr auto kRunningP2P = VFIO_DEVICE_STATE_RUNNING_P2P;

std::vector<std::byte> Bytes(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  for (int v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

// Reads the whole saving stream in |chunk|-byte reads.
std::vector<std::byte> ReadStream(DeviceFile& file, size_t chunk) {
  std::vector<std::byte> stream;
  std::vector<std::byte> buffer(chunk);
  for (;;) {
    const size_t n = file.MigrationRead(buffer).value();
    if (n == 0) return stream;
    stream.insert(stream.end(), buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
  }
}

TEST(DeviceMigrationTest, DeviceWithoutMigrationAnswersEnotty) {
  MigrationFixture fx(TestDevice::Features{});
  auto file = fx.Open(kMigUuid1);
  EXPECT_EQ(file->MigrationFlags().error().code, ENOTTY);
  EXPECT_EQ(file->GetMigrationState().error().code, ENOTTY);
  EXPECT_EQ(file->SetMigrationState(kStop).error().code, ENOTTY);
  EXPECT_EQ(file->MigrationDataSize().error().code, ENOTTY);
  EXPECT_EQ(file->DmaLoggingStop().error().code, ENOTTY);
  // MIG_DATA on a device without migration: libvfio-user's EINVAL.
  std::vector<std::byte> buffer(4);
  EXPECT_EQ(file->MigrationRead(buffer).error().code, EINVAL);
  EXPECT_EQ(file->MigrationWrite(buffer).error().code, EINVAL);
}

TEST(DeviceMigrationTest, FlagsAndStateComeFromTheVendor) {
  MigrationFixture fx({.migration_flags = kStopCopy | VFIO_MIGRATION_P2P});
  auto file = fx.Open(kMigUuid1);
  EXPECT_EQ(file->MigrationFlags().value(), kStopCopy | VFIO_MIGRATION_P2P);
  EXPECT_EQ(file->GetMigrationState().value(), kRunning);
}

TEST(DeviceMigrationTest, CombinationTransitionWalksSingleArcs) {
  MigrationFixture fx({.migration_flags = kStopCopy | VFIO_MIGRATION_P2P});
  auto file = fx.Open(kMigUuid1);
  EXPECT_EQ(file->SetMigrationState(kStopCopyState).value(), kStopCopyState);
  EXPECT_EQ(file->GetMigrationState().value(), kStopCopyState);
  EXPECT_EQ(file->SetMigrationState(kResuming).value(), kResuming);
  EXPECT_THAT(fx.fake(kMigUuid1).arcs(),
              ElementsAre(Pair(kRunning, kRunningP2P), Pair(kRunningP2P, kStop),
                          Pair(kStop, kStopCopyState), Pair(kStopCopyState, kStop),
                          Pair(kStop, kResuming)));
  EXPECT_EQ(fx.fake(kMigUuid1).illegal_arcs(), 0);
}

TEST(DeviceMigrationTest, TargetEqualToTheCurrentStateAsksForNoArc) {
  MigrationFixture fx({.migration_flags = kStopCopy});
  auto file = fx.Open(kMigUuid1);
  EXPECT_EQ(file->SetMigrationState(kRunning).value(), kRunning);
  EXPECT_TRUE(fx.fake(kMigUuid1).arcs().empty());
}

TEST(DeviceMigrationTest, InvalidTargetsAreEinvalAndLeaveTheStateAlone) {
  MigrationFixture fx({.migration_flags = kStopCopy});
  auto file = fx.Open(kMigUuid1);
  EXPECT_EQ(file->SetMigrationState(kError).error().code, EINVAL);
  EXPECT_EQ(file->SetMigrationState(kRunningP2P).error().code, EINVAL);       // No P2P flag.
  EXPECT_EQ(file->SetMigrationState(kVfioStatePreCopy).error().code, EINVAL);  // No PRE_COPY.
  EXPECT_EQ(file->GetMigrationState().value(), kRunning);
  EXPECT_TRUE(fx.fake(kMigUuid1).arcs().empty());
}

TEST(DeviceMigrationTest, StopCopyCannotGoBackToPreCopy) {
  MigrationFixture fx({.migration_flags = kStopCopy | kVfioMigrationPreCopy});
  auto file = fx.Open(kMigUuid1);
  EXPECT_EQ(file->SetMigrationState(kVfioStatePreCopy).value(), kVfioStatePreCopy);
  EXPECT_EQ(file->SetMigrationState(kStopCopyState).value(), kStopCopyState);
  EXPECT_EQ(file->SetMigrationState(kVfioStatePreCopy).error().code, EINVAL);
  EXPECT_EQ(file->GetMigrationState().value(), kStopCopyState);
}

TEST(DeviceMigrationTest, FailedArcReturnsItsErrorAndLeavesTheDeviceInError) {
  MigrationFixture fx({.migration_flags = kStopCopy});
  auto file = fx.Open(kMigUuid1);
  fx.fake(kMigUuid1).FailNextArcTo(kStopCopyState, EIO);
  const auto failed = file->SetMigrationState(kStopCopyState);
  ASSERT_FALSE(failed.has_value());
  EXPECT_EQ(failed.error().code, EIO);
  EXPECT_THAT(failed.error().context, ::testing::HasSubstr("STOP -> STOP_COPY"));
  EXPECT_EQ(file->GetMigrationState().value(), kError);
  // ERROR is left only by a reset: every target, ERROR aside, is EINVAL.
  EXPECT_EQ(file->SetMigrationState(kRunning).error().code, EINVAL);
  EXPECT_EQ(file->SetMigrationState(kStop).error().code, EINVAL);
  EXPECT_EQ(file->SetMigrationState(kError).value(), kError);
}

TEST(DeviceMigrationTest, ResetFromErrorReportsTheVendorsState) {
  MigrationFixture fx({.migration_flags = kStopCopy});
  auto file = fx.Open(kMigUuid1);
  fx.fake(kMigUuid1).FailNextArcTo(kStop, EIO);
  ASSERT_FALSE(file->SetMigrationState(kStop).has_value());
  ASSERT_EQ(file->GetMigrationState().value(), kError);
  ASSERT_TRUE(file->Reset().has_value());
  EXPECT_EQ(fx.parent().counters()->resets, 1);
  EXPECT_EQ(file->GetMigrationState().value(), kRunning);  // The uapi's promise.
  EXPECT_EQ(file->SetMigrationState(kStop).value(), kStop);
}

TEST(DeviceMigrationTest, StateAfterResetIsWhateverTheVendorSays) {
  MigrationFixture fx({.migration_flags = kStopCopy});
  auto file = fx.Open(kMigUuid1);
  fx.fake(kMigUuid1).set_state_after_reset(kError);  // A vendor whose reset fails to recover.
  ASSERT_TRUE(file->Reset().has_value());
  EXPECT_EQ(file->GetMigrationState().value(), kError);
}

TEST(DeviceMigrationTest, DataSizeIsValidInEveryState) {
  MigrationFixture fx({.migration_flags = kStopCopy});
  auto file = fx.Open(kMigUuid1);
  EXPECT_EQ(file->MigrationDataSize().value(), 12u + 256u);
  ASSERT_TRUE(file->SetMigrationState(kStopCopyState).has_value());
  EXPECT_EQ(file->MigrationDataSize().value(), 12u + 256u);
}

TEST(DeviceMigrationTest, DataReadOutsideSavingStatesIsEinval) {
  MigrationFixture fx({.migration_flags = kStopCopy});
  auto file = fx.Open(kMigUuid1);
  std::vector<std::byte> buffer(16);
  EXPECT_EQ(file->MigrationRead(buffer).error().code, EINVAL);  // RUNNING.
  ASSERT_TRUE(file->SetMigrationState(kStop).has_value());
  EXPECT_EQ(file->MigrationRead(buffer).error().code, EINVAL);
  ASSERT_TRUE(file->SetMigrationState(kResuming).has_value());
  EXPECT_EQ(file->MigrationRead(buffer).error().code, EINVAL);
}

TEST(DeviceMigrationTest, DataWriteOutsideResumingIsEinval) {
  MigrationFixture fx({.migration_flags = kStopCopy});
  auto file = fx.Open(kMigUuid1);
  const auto data = Bytes({1, 2, 3});
  EXPECT_EQ(file->MigrationWrite(data).error().code, EINVAL);  // RUNNING.
  ASSERT_TRUE(file->SetMigrationState(kStopCopyState).has_value());
  EXPECT_EQ(file->MigrationWrite(data).error().code, EINVAL);
  ASSERT_TRUE(file->SetMigrationState(kStop).has_value());
  EXPECT_EQ(file->MigrationWrite(data).error().code, EINVAL);
}

TEST(DeviceMigrationTest, PreCopyReadPassesTheVendorsAnswerThrough) {
  MigrationFixture fx({.migration_flags = kStopCopy | kVfioMigrationPreCopy});
  auto file = fx.Open(kMigUuid1);
  ASSERT_TRUE(file->SetMigrationState(kVfioStatePreCopy).has_value());
  std::vector<std::byte> buffer(16);
  EXPECT_EQ(file->MigrationRead(buffer).error().code, ENOMSG);  // The fake has no pre-copy data.
}

TEST(DeviceMigrationTest, SavedStreamResumesIntoASecondDevice) {
  MigrationFixture fx({.migration_flags = kStopCopy});
  auto source = fx.Open(kMigUuid1);
  auto destination = fx.Open(kMigUuid2);
  std::vector<std::byte> config(256);
  for (size_t i = 0; i < config.size(); ++i) config[i] = static_cast<std::byte>(i * 7 + 3);
  ASSERT_EQ(source->RegionWrite(VFIO_PCI_CONFIG_REGION_INDEX, 0, config).value(), config.size());

  ASSERT_EQ(source->SetMigrationState(kStopCopyState).value(), kStopCopyState);
  const std::vector<std::byte> stream = ReadStream(*source, 100);  // Short final read ends it.
  EXPECT_EQ(stream.size(), 12u + 256u);
  EXPECT_EQ(source->SetMigrationState(kRunning).value(), kRunning);

  ASSERT_EQ(destination->SetMigrationState(kResuming).value(), kResuming);
  // Segmentation need not be preserved when writing (uapi).
  const std::span<const std::byte> all(stream);
  EXPECT_EQ(destination->MigrationWrite(all.first(5)).value(), 5u);
  EXPECT_EQ(destination->MigrationWrite(all.subspan(5)).value(), stream.size() - 5);
  ASSERT_EQ(destination->SetMigrationState(kRunning).value(), kRunning);

  std::vector<std::byte> restored(256);
  ASSERT_TRUE(destination->RegionRead(VFIO_PCI_CONFIG_REGION_INDEX, 0, restored).has_value());
  EXPECT_EQ(restored, config);
}

TEST(DeviceMigrationTest, PrecopyInfoIsAskedOnlyInPreCopyAndEnottyWhenNotReported) {
  MigrationFixture fx({.migration_flags = kStopCopy | kVfioMigrationPreCopy});
  auto file = fx.Open(kMigUuid1);
  EXPECT_EQ(file->MigrationPrecopyInfo().error().code, EINVAL);  // RUNNING.
  ASSERT_TRUE(file->SetMigrationState(kVfioStatePreCopy).has_value());
  EXPECT_EQ(file->MigrationPrecopyInfo().error().code, ENOTTY);  // The fake does not report it.
  MigrationFixture none(TestDevice::Features{});
  EXPECT_EQ(none.Open(kMigUuid1)->MigrationPrecopyInfo().error().code, ENOTTY);
}

TEST(DeviceMigrationTest, TheMigrationViewShowsTheStateAndTheBytesMoved) {
  MigrationFixture fx({.migration_flags = kStopCopy});
  Registry& registry = fx.registry();
  const std::vector<DeviceAttribute> attributes = registry.MdevAttributes(kMigUuid1).value();
  std::vector<std::string> names;
  for (const DeviceAttribute& attribute : attributes) names.push_back(attribute.name);
  EXPECT_NE(std::find(names.begin(), names.end(), "migration/state"), names.end());
  EXPECT_EQ(registry.ReadMdevAttribute(kMigUuid1, "migration/state").value(), "RUNNING");
  auto source = fx.Open(kMigUuid1);
  auto destination = fx.Open(kMigUuid2);
  ASSERT_EQ(source->SetMigrationState(kStopCopyState).value(), kStopCopyState);
  EXPECT_EQ(registry.ReadMdevAttribute(kMigUuid1, "migration/state").value(), "STOP_COPY");
  const std::vector<std::byte> stream = ReadStream(*source, 100);
  EXPECT_EQ(registry.ReadMdevAttribute(kMigUuid1, "migration/bytes_saved").value(),
            std::to_string(stream.size()));
  ASSERT_EQ(destination->SetMigrationState(kResuming).value(), kResuming);
  ASSERT_EQ(destination->MigrationWrite(stream).value(), stream.size());
  EXPECT_EQ(registry.ReadMdevAttribute(kMigUuid2, "migration/bytes_loaded").value(),
            std::to_string(stream.size()));
  EXPECT_EQ(registry.ReadMdevAttribute(kMigUuid2, "migration/bytes_saved").value(), "0");
  EXPECT_EQ(registry.WriteMdevAttribute(kMigUuid1, "migration/state", "STOP").error().code, EACCES);
  // A device that does not migrate has no such attributes.
  MigrationFixture plain(TestDevice::Features{});
  EXPECT_EQ(plain.registry().ReadMdevAttribute(kMigUuid1, "migration/state").error().code, ENOENT);
}

TEST(DeviceMigrationTest, TruncatedResumeStreamFailsTheArcIntoError) {
  MigrationFixture fx({.migration_flags = kStopCopy});
  auto source = fx.Open(kMigUuid1);
  auto destination = fx.Open(kMigUuid2);
  ASSERT_TRUE(source->SetMigrationState(kStopCopyState).has_value());
  const std::vector<std::byte> stream = ReadStream(*source, 4096);
  ASSERT_TRUE(destination->SetMigrationState(kResuming).has_value());
  ASSERT_TRUE(destination->MigrationWrite(std::span(stream).first(stream.size() - 1)).has_value());
  EXPECT_EQ(destination->SetMigrationState(kRunning).error().code, EINVAL);
  EXPECT_EQ(destination->GetMigrationState().value(), kError);
}

TEST(DeviceMigrationTest, RevokedHandleIsEnodev) {
  MigrationFixture fx({.migration_flags = kStopCopy, .dirty_log = true});
  auto file = fx.Open(kMigUuid1);
  ASSERT_TRUE(fx.registry().RemoveMdev(kMigUuid1).has_value());  // Never released: revoked.
  std::vector<std::byte> buffer(4);
  const SparseMmapArea range{0, 4096};
  EXPECT_EQ(file->MigrationFlags().error().code, ENODEV);
  EXPECT_EQ(file->GetMigrationState().error().code, ENODEV);
  EXPECT_EQ(file->SetMigrationState(kStop).error().code, ENODEV);
  EXPECT_EQ(file->MigrationDataSize().error().code, ENODEV);
  EXPECT_EQ(file->MigrationRead(buffer).error().code, ENODEV);
  EXPECT_EQ(file->MigrationWrite(buffer).error().code, ENODEV);
  EXPECT_EQ(file->DmaLoggingStart(std::span(&range, 1), 4096).error().code, ENODEV);
  EXPECT_EQ(file->DmaLoggingStop().error().code, ENODEV);
  EXPECT_EQ(file->DmaLoggingReport(0, 4096, 4096).error().code, ENODEV);
  EXPECT_EQ(file->Reset().error().code, ENODEV);
}

TEST(DeviceMigrationTest, BrokenDeviceIsEioUntilReset) {
  MigrationFixture fx({.migration_flags = kStopCopy, .dirty_log = true});
  auto file = fx.Open(kMigUuid1);
  constexpr uint64_t kIova = 0x100000;
  ASSERT_TRUE(fx.last_iommu()
                  .Map({.iova = kIova, .size = kPageSize, .prot = kProtRead, .fd = {}, .offset = 0})
                  .has_value());
  ASSERT_TRUE(fx.vendor(kMigUuid1).PinAndHold(kIova, 1, kProtRead).has_value());
  fx.vendor(kMigUuid1).set_refuse_unpin(true);
  ASSERT_TRUE(fx.last_iommu().Unmap(kIova, kPageSize).has_value());  // Pins revoked: broken.
  std::vector<std::byte> buffer(4);
  EXPECT_EQ(file->MigrationFlags().error().code, EIO);
  EXPECT_EQ(file->GetMigrationState().error().code, EIO);
  EXPECT_EQ(file->SetMigrationState(kStop).error().code, EIO);
  EXPECT_EQ(file->MigrationDataSize().error().code, EIO);
  EXPECT_EQ(file->MigrationRead(buffer).error().code, EIO);
  EXPECT_EQ(file->MigrationWrite(buffer).error().code, EIO);
  EXPECT_EQ(file->DmaLoggingStop().error().code, EIO);
  ASSERT_TRUE(file->Reset().has_value());
  EXPECT_EQ(file->SetMigrationState(kStop).value(), kStop);
}

TEST(DeviceMigrationTest, LastCloseDropsTheSession) {
  MigrationFixture fx({.migration_flags = kStopCopy});
  {
    auto file = fx.Open(kMigUuid1);
    ASSERT_TRUE(file->SetMigrationState(kStopCopyState).has_value());
  }
  auto file = fx.Open(kMigUuid1);
  EXPECT_EQ(file->GetMigrationState().value(), kRunning);
}

}  // namespace
}  // namespace umdev
