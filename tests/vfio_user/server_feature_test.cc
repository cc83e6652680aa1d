// DEVICE_FEATURE and MIG_DATA over vfio-user: the migration v2 state machine,
// the data stream into a second device, DMA logging, and their errors.
#include <cstring>

#include "server_fixture.h"
#include "umdev/mdev_core/migration.h"

namespace umdev::vfio_user::testing {
namespace {

constexpr uint32_t kGet = VFIO_DEVICE_FEATURE_GET;
constexpr uint32_t kSet = VFIO_DEVICE_FEATURE_SET;
constexpr uint32_t kProbe = VFIO_DEVICE_FEATURE_PROBE;

struct MigState {
  uint32_t device_state;
  int32_t data_fd;
};

class ServerFeatureTest : public ServerTest {
 protected:
  // A second parent whose devices migrate and log DMA.
  Uuid CreateMigratable() {
    umdev::testing::TestParentDriver::Options options;
    options.parent_name = "mig_parent";
    options.features = umdev::testing::TestDeviceFeatures{
        VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P, /*dirty_log=*/true};
    if (!mig_parent_) {
      mig_parent_ = std::make_shared<umdev::testing::TestParentDriver>(options);
      EXPECT_TRUE(registry_->RegisterParent(mig_parent_));
    }
    const Uuid uuid = Uuid::Generate();
    EXPECT_TRUE(registry_->CreateMdev("mig_parent", "test-a", uuid));
    return uuid;
  }

  RawPeer Attach(const Uuid& uuid) {
    auto peer = RawPeer::Connect(server_->SocketPath(uuid));
    EXPECT_TRUE(peer.has_value());
    EXPECT_EQ(RawPeer::ErrorOf(peer->Negotiate()), 0);
    return std::move(*peer);
  }

  static Message Feature(RawPeer& peer, uint32_t flags, std::span<const std::byte> data = {},
                         uint32_t argsz = 0) {
    std::vector<std::byte> payload = Payload(DeviceFeaturePayload{
        argsz != 0 ? argsz : static_cast<uint32_t>(8 + data.size() + 64), flags});
    AppendBytes(payload, data);
    return peer.Call(Command::kDeviceFeature, payload);
  }

  static Message SetState(RawPeer& peer, vfio_device_mig_state state) {
    return Feature(peer, kSet | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
                   Payload(MigState{state, -1}));
  }

  static uint32_t StateOf(const Message& reply) {
    auto state = LoadPayload<MigState>(reply.payload, sizeof(DeviceFeaturePayload));
    return state ? state->device_state : 0xffffffff;
  }

  std::shared_ptr<umdev::testing::TestParentDriver> mig_parent_;
};

TEST_F(ServerFeatureTest, DeviceWithoutMigrationAnswersEnotty) {
  RawPeer peer = ConnectAndNegotiate();
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kGet | VFIO_DEVICE_FEATURE_MIGRATION)), ENOTTY);
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kProbe | kGet | VFIO_DEVICE_FEATURE_MIGRATION)), ENOTTY);
  EXPECT_EQ(RawPeer::ErrorOf(SetState(peer, VFIO_DEVICE_STATE_STOP)), ENOTTY);
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kProbe | kSet | VFIO_DEVICE_FEATURE_DMA_LOGGING_START)),
            ENOTTY);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kMigDataRead, Payload(MigDataPayload{8 + 16, 16}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kGet | 99)), ENOTTY);
}

TEST_F(ServerFeatureTest, MigrationFlagsAndProbe) {
  RawPeer peer = Attach(CreateMigratable());
  Message flags = Feature(peer, kGet | VFIO_DEVICE_FEATURE_MIGRATION);
  ASSERT_EQ(RawPeer::ErrorOf(flags), 0);
  EXPECT_EQ(*LoadPayload<uint64_t>(flags.payload, 8), VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P);
  EXPECT_EQ(LoadPayload<DeviceFeaturePayload>(flags.payload)->argsz, 16u);
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kProbe | kGet | VFIO_DEVICE_FEATURE_MIGRATION)), 0);
  // MIGRATION cannot be set; argsz too small for the data is EINVAL.
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kSet | VFIO_DEVICE_FEATURE_MIGRATION)), EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kGet | VFIO_DEVICE_FEATURE_MIGRATION, {}, 12)), EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, VFIO_DEVICE_FEATURE_MIGRATION)), EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kGet | (1u << 20) | VFIO_DEVICE_FEATURE_MIGRATION)), EINVAL);
}

TEST_F(ServerFeatureTest, StateMachineWalksPathsAndRefusesBadTargets) {
  RawPeer peer = Attach(CreateMigratable());
  Message now = Feature(peer, kGet | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE);
  ASSERT_EQ(RawPeer::ErrorOf(now), 0);
  EXPECT_EQ(StateOf(now), VFIO_DEVICE_STATE_RUNNING);
  // RUNNING -> STOP_COPY goes through RUNNING_P2P and STOP.
  Message copy = SetState(peer, VFIO_DEVICE_STATE_STOP_COPY);
  ASSERT_EQ(RawPeer::ErrorOf(copy), 0);
  EXPECT_EQ(StateOf(copy), VFIO_DEVICE_STATE_STOP_COPY);
  EXPECT_EQ(RawPeer::ErrorOf(SetState(peer, VFIO_DEVICE_STATE_ERROR)), EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(SetState(peer, static_cast<vfio_device_mig_state>(kVfioStateCount))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(SetState(peer, static_cast<vfio_device_mig_state>(kVfioStatePreCopy))),
            EINVAL);  // No PRE_COPY flag.
  EXPECT_EQ(StateOf(SetState(peer, VFIO_DEVICE_STATE_RUNNING)), VFIO_DEVICE_STATE_RUNNING);
  Message size = Feature(peer, kGet | kVfioDeviceFeatureMigDataSize);
  ASSERT_EQ(RawPeer::ErrorOf(size), 0);
}

TEST_F(ServerFeatureTest, SavedStreamResumesIntoASecondDevice) {
  const Uuid source_uuid = CreateMigratable();
  const Uuid target_uuid = CreateMigratable();
  RawPeer source = Attach(source_uuid);
  RawPeer target = Attach(target_uuid);
  const uint64_t pattern = 0x0123456789abcdefull;
  ASSERT_EQ(RawPeer::ErrorOf(source.Call(
                Command::kRegionWrite,
                Payload(RegionAccessPayload{0x60, VFIO_PCI_CONFIG_REGION_INDEX, 8}, pattern))),
            0);
  ASSERT_EQ(StateOf(SetState(source, VFIO_DEVICE_STATE_STOP_COPY)), VFIO_DEVICE_STATE_STOP_COPY);
  std::vector<std::byte> stream;
  for (;;) {
    Message chunk = source.Call(Command::kMigDataRead, Payload(MigDataPayload{8 + 100, 100}));
    ASSERT_EQ(RawPeer::ErrorOf(chunk), 0);
    auto header = LoadPayload<MigDataPayload>(chunk.payload);
    ASSERT_TRUE(header.has_value());
    ASSERT_EQ(chunk.payload.size(), 8 + header->size);
    AppendBytes(stream, std::span(chunk.payload).subspan(8));
    if (header->size < 100) break;
  }
  ASSERT_FALSE(stream.empty());
  // Writing while not RESUMING is refused.
  EXPECT_EQ(RawPeer::ErrorOf(target.Call(Command::kMigDataWrite,
                                         Payload(MigDataPayload{8 + 1, 1}, uint8_t{0}))),
            EINVAL);
  ASSERT_EQ(StateOf(SetState(target, VFIO_DEVICE_STATE_RESUMING)), VFIO_DEVICE_STATE_RESUMING);
  for (size_t at = 0; at < stream.size(); at += 64) {
    const size_t n = std::min<size_t>(64, stream.size() - at);
    std::vector<std::byte> payload = Payload(MigDataPayload{static_cast<uint32_t>(8 + n),
                                                            static_cast<uint32_t>(n)});
    AppendBytes(payload, std::span(stream).subspan(at, n));
    ASSERT_EQ(RawPeer::ErrorOf(target.Call(Command::kMigDataWrite, payload)), 0);
  }
  ASSERT_EQ(StateOf(SetState(target, VFIO_DEVICE_STATE_RUNNING)), VFIO_DEVICE_STATE_RUNNING);
  Message read = target.Call(Command::kRegionRead,
                             Payload(RegionAccessPayload{0x60, VFIO_PCI_CONFIG_REGION_INDEX, 8}));
  EXPECT_EQ(*LoadPayload<uint64_t>(read.payload, 16), pattern);
}

TEST_F(ServerFeatureTest, MigDataMessagesAreValidated) {
  RawPeer peer = Attach(CreateMigratable());
  ASSERT_EQ(StateOf(SetState(peer, VFIO_DEVICE_STATE_STOP_COPY)), VFIO_DEVICE_STATE_STOP_COPY);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kMigDataRead, Payload(MigDataPayload{8, 100}))),
            EINVAL);  // argsz cannot hold it.
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kMigDataRead,
                                       Payload(MigDataPayload{8 + 16, 16}, uint32_t{0}))),
            EINVAL);  // Carries data.
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kMigDataRead,
                                       Payload(MigDataPayload{UINT32_MAX, 1u << 21}))),
            E2BIG);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kMigDataWrite,
                                       Payload(MigDataPayload{8 + 4, 4}, uint16_t{0}))),
            EINVAL);  // Size disagrees with the data.
  // Reading in a non-saving state.
  ASSERT_EQ(StateOf(SetState(peer, VFIO_DEVICE_STATE_RUNNING)), VFIO_DEVICE_STATE_RUNNING);
  EXPECT_EQ(RawPeer::ErrorOf(peer.Call(Command::kMigDataRead, Payload(MigDataPayload{8 + 16, 16}))),
            EINVAL);
}

TEST_F(ServerFeatureTest, DmaLoggingStartReportStop) {
  RawPeer peer = Attach(CreateMigratable());
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kProbe | kSet | VFIO_DEVICE_FEATURE_DMA_LOGGING_START)), 0);
  ASSERT_EQ(RawPeer::ErrorOf(Feature(peer, kSet | VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
                                     Payload(DmaLoggingControl{4096, 1, 0},
                                             DmaLoggingRange{0, 0x10000}))),
            0);
  // Range count disagreeing with the data.
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kSet | VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
                                     Payload(DmaLoggingControl{4096, 2, 0},
                                             DmaLoggingRange{0, 0x10000}))),
            EINVAL);
  Message report = Feature(peer, kGet | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
                           Payload(DmaLoggingReport{0, 0x10000, 4096}));
  ASSERT_EQ(RawPeer::ErrorOf(report), 0);
  // Header, the echoed request, one u64 word for 16 pages.
  EXPECT_EQ(report.payload.size(), 8u + 24u + 8u);
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kGet | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
                                     Payload(DmaLoggingReport{0, 0x10000, 1000}))),
            EINVAL);
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kSet | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP)), 0);
}

// The reply's size follows from the request: a report whose bitmap could
// never fit max_data_xfer_size is E2BIG before the device builds it (so a
// client cannot make the daemon allocate a bitmap it will not send, and
// the device's dirty bits are not read and lost).
TEST_F(ServerFeatureTest, AnOversizedReportIsRefusedBeforeTheDeviceIsAsked) {
  const Uuid uuid = CreateMigratable();
  RawPeer peer = Attach(uuid);
  ASSERT_EQ(RawPeer::ErrorOf(Feature(peer, kSet | VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
                                     Payload(DmaLoggingControl{4096, 1, 0},
                                             DmaLoggingRange{0, 0x10000}))),
            0);
  mig_parent_->device(uuid)->fake_migration().MarkDirty(0x3000);
  // 2^40 bytes of 4 KiB pages: a 32 MiB bitmap.
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kGet | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
                                     Payload(DmaLoggingReport{0, uint64_t{1} << 40, 4096}),
                                     0xffffffff)),
            E2BIG);
  // argsz without room for the bitmap: EINVAL, also before the device.
  EXPECT_EQ(RawPeer::ErrorOf(Feature(peer, kGet | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
                                     Payload(DmaLoggingReport{0, 0x10000, 4096}), 8 + 24)),
            EINVAL);
  Message report = Feature(peer, kGet | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
                           Payload(DmaLoggingReport{0, 0x10000, 4096}));
  ASSERT_EQ(RawPeer::ErrorOf(report), 0);
  auto bitmap = LoadPayload<uint64_t>(report.payload, 8 + 24);
  ASSERT_TRUE(bitmap.has_value());
  EXPECT_EQ(*bitmap, uint64_t{1} << 3) << "page 3 still dirty: the refused reports read nothing";
  // Another device of the daemon never noticed.
  RawPeer other = Attach(CreateMigratable());
  EXPECT_EQ(RawPeer::ErrorOf(Feature(other, kGet | VFIO_DEVICE_FEATURE_MIGRATION, {},
                                     sizeof(DeviceFeaturePayload) + sizeof(uint64_t))),
            0);
}

}  // namespace
}  // namespace umdev::vfio_user::testing
