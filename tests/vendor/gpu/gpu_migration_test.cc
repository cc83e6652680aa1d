// GpuDevice's migration: a slice saved on one instance and resumed into a
// fresh one (memory, registers, a ring that goes on), pre-copy re-sending
// what the ring and the mmap changed, malformed streams, and STOP under a
// running command.
#include <atomic>
#include <cstring>
#include <thread>

#include "gpu_device_test_util.h"
#include "umdev/mdev_core/migration.h"

namespace umdev::vendor::gpu::testing {
namespace {

constexpr auto kRunning = VFIO_DEVICE_STATE_RUNNING;
constexpr auto kStop = VFIO_DEVICE_STATE_STOP;
constexpr auto kStopCopy = VFIO_DEVICE_STATE_STOP_COPY;
constexpr auto kResuming = VFIO_DEVICE_STATE_RESUMING;
constexpr auto kError = VFIO_DEVICE_STATE_ERROR;
constexpr size_t kHeaderBytes = 32;
constexpr size_t kPageRecordBytes = 16 + 8 + kPageSize;  // One page alone in a record.

class GpuMigrationTest : public GpuDeviceFixture {
 protected:
  MigrationOps& Mig() { return *device_->migration(); }

  // Walks the arcs to |target| as the core does.
  Result<void> Go(vfio_device_mig_state target) {
    while (Mig().GetState() != target) {
      UMDEV_ASSIGN_OR_RETURN(const auto next,
                             NextMigrationState(Mig().flags(), Mig().GetState(), target));
      UMDEV_TRY(Mig().SetState(next));
    }
    return {};
  }
  // Reads until the stream (or this pre-copy pass) reports 0 bytes.
  std::vector<std::byte> ReadPass() {
    std::vector<std::byte> out;
    std::vector<std::byte> buf(10000);  // Not a record multiple: records split.
    for (;;) {
      auto n = Mig().ReadData(buf);
      EXPECT_TRUE(n.has_value());
      if (!n.has_value() || *n == 0) return out;
      out.insert(out.end(), buf.begin(), buf.begin() + static_cast<ptrdiff_t>(*n));
    }
  }
  std::vector<std::byte> SaveStopCopy() {
    EXPECT_TRUE(Go(kStopCopy).has_value());
    auto stream = ReadPass();
    EXPECT_TRUE(Go(kStop).has_value());
    return stream;
  }
  // A fresh instance of the same type replaces the device (the guest RAM,
  // which the VMM migrates itself, stays).
  void Replace(GpuDeviceOptions options = {}) {
    DestroyDevice();
    MakeDevice(std::move(options));
  }
  // Writes |stream| in odd-sized pieces and ends RESUMING.
  // A refused piece ends the writing; the first error is returned.
  Result<void> Resume(std::span<const std::byte> stream) {
    UMDEV_TRY(Go(kResuming));
    for (size_t at = 0; at < stream.size(); at += 777) {
      const size_t len = std::min<size_t>(777, stream.size() - at);
      auto n = Mig().WriteData(stream.subspan(at, len));
      if (!n.has_value()) {
        EXPECT_EQ(Mig().SetState(kStop).error().code, n.error().code);
        return std::unexpected(n.error());
      }
      EXPECT_EQ(*n, len);
    }
    return Mig().SetState(kStop);
  }
  std::vector<std::byte> SliceBytes() {
    std::vector<std::byte> out(kSliceBytes);
    EXPECT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 0, out).has_value());
    return out;
  }
  void WriteSlice(uint64_t offset, uint32_t seed, size_t words) {
    std::vector<uint32_t> data(words);
    for (size_t i = 0; i < words; ++i) data[i] = seed * 2654435761u + static_cast<uint32_t>(i);
    ASSERT_TRUE(
        device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, offset, std::as_bytes(std::span(data)))
            .has_value());
  }
};

TEST_P(GpuMigrationTest, OffersPreCopyAndRefusesStreamsOutsideTheirStates) {
  EXPECT_EQ(Mig().flags(),
            VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | kVfioMigrationPreCopy);
  EXPECT_EQ(Mig().GetState(), kRunning);
  std::byte buf[16];
  EXPECT_EQ(Mig().ReadData(buf).error().code, EINVAL);
  EXPECT_EQ(Mig().WriteData(buf).error().code, EINVAL);
  EXPECT_EQ(device_->PrecopyInfo().error().code, EINVAL);
  EXPECT_EQ(Mig().SetState(kStopCopy).error().code, EINVAL);  // Not one arc.
  EXPECT_EQ(Mig().GetState(), kRunning);
  auto size = Mig().GetDataSize();
  ASSERT_TRUE(size.has_value());
  EXPECT_GT(*size, kSliceBytes);
}

TEST_P(GpuMigrationTest, ResumedInstanceHasTheMemoryRegistersAndRing) {
  EnableQueue();
  WriteSlice(0x3000, 7, 2048);
  Submit({Fill(0x40000, 8192, 0xabcd1234), Fence(kDataIova, 41, false)});
  SetReg(kRegIntMask, kIntError);
  const auto memory = SliceBytes();
  const uint32_t head = Reg(kRegQueueHead);
  ASSERT_EQ(head, 2u);
  const uint64_t commands = device_->stats().commands;

  const auto stream = SaveStopCopy();
  // Header, the pages that are not zero... every page once, the device state.
  EXPECT_GT(stream.size(), kHeaderBytes + kSliceBytes);
  EXPECT_LE(stream.size(), *Mig().GetDataSize());
  Replace();
  ASSERT_TRUE(Resume(stream).has_value());
  ASSERT_TRUE(Go(kRunning).has_value());

  EXPECT_EQ(SliceBytes(), memory);
  EXPECT_EQ(Reg64(kRegQueueBase), kRingIova);
  EXPECT_EQ(Reg(kRegQueueSize), 16u);
  EXPECT_EQ(Reg(kRegQueueCtrl), kQueueEnable);
  EXPECT_EQ(Reg(kRegQueueHead), head);
  EXPECT_EQ(Reg(kRegQueueTail), head);
  EXPECT_EQ(Reg64(kRegFenceDone), 41u);
  EXPECT_EQ(Reg(kRegIntMask), kIntError);
  EXPECT_EQ(device_->stats().commands, commands);
  // The ring goes on where it was.
  Submit({Fill(0x80000, 4096, 0x11111111), Fence(kDataIova, 42)});
  EXPECT_EQ(Reg(kRegQueueHead), 4u);
  EXPECT_EQ(Reg64(kRegFenceDone), 42u);
  EXPECT_EQ(GetGuest<uint64_t>(kDataIova, 1)[0], 42u);
  EXPECT_EQ(Reg(kRegIntStatus) & kIntFence, kIntFence);
  uint32_t word = 0;
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 0x80ffc,
                                  std::as_writable_bytes(std::span(&word, 1)))
                  .has_value());
  EXPECT_EQ(word, 0x11111111u);
}

TEST_P(GpuMigrationTest, EntriesPendingAtStopRunAfterResume) {
  EnableQueue();
  ASSERT_TRUE(Go(kStop).has_value());
  // Submitted while stopped: taken by no one until the destination runs.
  std::memcpy(Guest(kRingIova), Fill(0, 4096, 0x77777777).bytes, kEntrySize);
  std::memcpy(Guest(kRingIova + kEntrySize), Fence(kDataIova, 9).bytes, kEntrySize);
  SetReg(kRegQueueTail, 2);
  SetReg(kRegDoorbell, 1);
  EXPECT_EQ(Reg(kRegQueueHead), 0u);
  const auto stream = SaveStopCopy();
  Replace();
  ASSERT_TRUE(Resume(stream).has_value());
  EXPECT_EQ(Reg(kRegQueueTail), 2u);
  ASSERT_TRUE(Go(kRunning).has_value());
  ASSERT_TRUE(device_->WaitIdle());
  EXPECT_EQ(Reg(kRegQueueHead), 2u);
  EXPECT_EQ(Reg64(kRegFenceDone), 9u);
  EXPECT_EQ(SliceBytes()[4095], std::byte{0x77});
}

// A polled tail travels with the device state: entries stored in the
// doorbell page while stopped run on the destination, whose page holds the
// tail. A destination without a page refuses such a state.
TEST_P(GpuMigrationTest, APolledTailMigratesIntoTheDestinationsPage) {
  auto poller = std::make_shared<DoorbellPoller>(
      DoorbellPollerOptions{.spin = std::chrono::seconds(30)});
  Replace({.doorbell_poller = poller});
  EnableQueue();
  SetReg(kRegQueueCtrl, 0);
  SetReg(kRegQueueCtrl, kQueueEnable | kQueueDoorbellPage);
  ASSERT_TRUE(Go(kStop).has_value());
  std::memcpy(Guest(kRingIova), Fill(0, 4096, 0x55555555).bytes, kEntrySize);
  std::memcpy(Guest(kRingIova + kEntrySize), Fence(kDataIova, 12).bytes, kEntrySize);
  const uint32_t tail = 2;
  ASSERT_TRUE(device_->RegionWrite(VFIO_PCI_BAR4_REGION_INDEX, kDbTail,
                                   std::as_bytes(std::span(&tail, 1))).has_value());
  const auto stream = SaveStopCopy();

  Replace();  // No doorbell page.
  auto refused = Resume(stream);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, EINVAL);

  Replace({.doorbell_poller = poller});
  ASSERT_TRUE(Resume(stream).has_value());
  EXPECT_EQ(Reg(kRegQueueCtrl), kQueueEnable | kQueueDoorbellPage);
  uint32_t page_tail = 0;
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR4_REGION_INDEX, kDbTail,
                                  std::as_writable_bytes(std::span(&page_tail, 1))).has_value());
  EXPECT_EQ(page_tail, 2u);
  ASSERT_TRUE(Go(kRunning).has_value());
  SetReg(kRegDoorbell, 1);
  ASSERT_TRUE(device_->WaitIdle());
  EXPECT_EQ(Reg(kRegQueueHead), 2u);
  EXPECT_EQ(Reg64(kRegFenceDone), 12u);
}

TEST_P(GpuMigrationTest, PreCopyResendsPagesTheRingAndTheMmapChanged) {
  auto info = device_->GetRegionInfo(VFIO_PCI_BAR2_REGION_INDEX);
  ASSERT_TRUE(info.has_value());
  if (info->mmap_fd < 0) GTEST_SKIP() << "the Vulkan driver cannot import host memory";
  auto bar2 = Mapping::Map(info->mmap_fd, info->mmap_offset, kSliceBytes,
                           PROT_READ | PROT_WRITE, MAP_SHARED);
  ASSERT_TRUE(bar2.has_value());
  EnableQueue();
  WriteSlice(0, 1, kSliceBytes / 4);

  ASSERT_TRUE(Go(kVfioStatePreCopy).has_value());
  auto before = device_->PrecopyInfo();
  ASSERT_TRUE(before.has_value());
  EXPECT_EQ(before->initial_bytes, kHeaderBytes + kSliceBytes);
  EXPECT_EQ(before->dirty_bytes, 0u);
  std::vector<std::byte> stream = ReadPass();
  EXPECT_GT(stream.size(), kHeaderBytes + kSliceBytes);
  auto sent = device_->PrecopyInfo();
  ASSERT_TRUE(sent.has_value());
  EXPECT_EQ(sent->initial_bytes, 0u);
  EXPECT_EQ(sent->dirty_bytes, 0u);
  EXPECT_TRUE(ReadPass().empty());  // Nothing changed: an empty pass.

  // The device keeps running: a ring FILL dirties page 5, a guest store
  // through the mapping page 9 (seen only by comparing with what was sent).
  Submit({Fill(5 * kPageSize + 100, 8, 0xdeadbeef)});
  bar2->data()[9 * kPageSize + 17] = std::byte{0xee};
  auto dirtied = device_->PrecopyInfo();
  ASSERT_TRUE(dirtied.has_value());
  EXPECT_EQ(dirtied->initial_bytes, 0u);
  EXPECT_EQ(dirtied->dirty_bytes, 2 * kPageSize);
  // The same answer through MigrationOps, as the core's
  // DeviceFile::MigrationPrecopyInfo() asks it.
  MigrationOps* ops = device_->migration();
  ASSERT_NE(ops, nullptr);
  const Result<umdev::PrecopyInfo> through_core = ops->GetPrecopyInfo();
  ASSERT_TRUE(through_core.has_value());
  EXPECT_EQ(through_core->initial_bytes, 0u);
  EXPECT_EQ(through_core->dirty_bytes, 2 * kPageSize);
  const auto resent = ReadPass();
  EXPECT_EQ(resent.size(), 2 * kPageRecordBytes);
  stream.insert(stream.end(), resent.begin(), resent.end());

  // Dirtied again, then stopped: STOP_COPY sends the rest and the state.
  bar2->data()[200 * kPageSize] = std::byte{0x42};
  Submit({Fill(100 * kPageSize, 4, 0x01020304), Fence(kDataIova, 5, false)});
  const auto expected = SliceBytes();
  ASSERT_TRUE(Go(kStopCopy).has_value());
  const auto rest = ReadPass();
  EXPECT_LT(rest.size(), 4 * kPageRecordBytes);  // Two pages and the device state.
  stream.insert(stream.end(), rest.begin(), rest.end());
  ASSERT_TRUE(Go(kStop).has_value());

  Replace();
  ASSERT_TRUE(Resume(stream).has_value());
  ASSERT_TRUE(Go(kRunning).has_value());
  EXPECT_EQ(SliceBytes(), expected);
  EXPECT_EQ(Reg64(kRegFenceDone), 5u);
}

TEST_P(GpuMigrationTest, PreCopyBackToRunningDropsTheStream) {
  ASSERT_TRUE(Go(kVfioStatePreCopy).has_value());
  std::byte buf[64];
  ASSERT_TRUE(Mig().ReadData(buf).has_value());
  ASSERT_TRUE(Go(kRunning).has_value());
  EXPECT_EQ(Mig().ReadData(buf).error().code, EINVAL);
}

class GpuMigrationStreamTest : public GpuMigrationTest {
 protected:
  void SetUp() override {
    GpuMigrationTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    EnableQueue();
    WriteSlice(0x1000, 3, 64);
    stream_ = SaveStopCopy();
    Replace();
  }
  // The resume fails with EINVAL and leaves the device in ERROR until reset.
  void ExpectRefused(std::span<const std::byte> stream) {
    auto resumed = Resume(stream);
    ASSERT_FALSE(resumed.has_value());
    EXPECT_EQ(resumed.error().code, EINVAL) << resumed.error().Describe();
    EXPECT_EQ(Mig().GetState(), kError);
    EXPECT_EQ(Mig().SetState(kStop).error().code, EINVAL);
    ASSERT_TRUE(device_->Reset().has_value());
    EXPECT_EQ(Mig().GetState(), kRunning);
    EXPECT_EQ(Reg(kRegQueueCtrl), 0u);  // Nothing of the stream was loaded.
  }
  std::vector<std::byte> stream_;
};

TEST_P(GpuMigrationStreamTest, WholeStreamResumes) {
  ASSERT_TRUE(Resume(stream_).has_value());
  EXPECT_EQ(Reg(kRegQueueCtrl), kQueueEnable);
}

TEST_P(GpuMigrationStreamTest, BadMagicIsRefused) {
  stream_[0] ^= std::byte{1};
  ExpectRefused(stream_);
}

TEST_P(GpuMigrationStreamTest, UnknownVersionIsRefused) {
  stream_[8] = std::byte{2};
  ExpectRefused(stream_);
}

TEST_P(GpuMigrationStreamTest, TruncatedStreamIsRefused) {
  for (size_t cut : {size_t{10}, kHeaderBytes, kHeaderBytes + 20, stream_.size() - 1}) {
    SCOPED_TRACE(cut);
    ExpectRefused(std::span(stream_).first(cut));
  }
}

TEST_P(GpuMigrationStreamTest, UnknownRecordTypeIsRefused) {
  stream_[kHeaderBytes] = std::byte{9};
  ExpectRefused(stream_);
}

TEST_P(GpuMigrationStreamTest, PagesOutsideTheSliceAreRefused) {
  // The first record is PAGES at offset 0: move it past the slice.
  const uint64_t offset = kSliceBytes;
  std::memcpy(stream_.data() + kHeaderBytes + 16, &offset, 8);
  ExpectRefused(stream_);
}

TEST_P(GpuMigrationStreamTest, TrailingBytesAreRefused) {
  stream_.push_back(std::byte{0});
  ExpectRefused(stream_);
}

TEST_P(GpuMigrationStreamTest, CorruptDeviceStateIsRefused) {
  // QUEUE_CTRL of the DEVICE record (after its 16-byte record header, 8-byte
  // base, 4-byte size), found from the END record back.
  auto config = device_->GetRegionInfo(VFIO_PCI_CONFIG_REGION_INDEX);
  ASSERT_TRUE(config.has_value());
  const size_t device_payload = 8 + 4 * 4 + 8 + 6 * 4 + 4 * 8 + 1024 + 4 + config->size;
  const size_t device_record = stream_.size() - 16 - (16 + device_payload);
  stream_[device_record + 16 + 12] = std::byte{0x80};
  ExpectRefused(stream_);
}

TEST_P(GpuMigrationStreamTest, AnotherSliceSizeIsRefused) {
  DestroyDevice();
  auto slice = engine_->CreateSlice(kSliceBytes / 2);
  ASSERT_TRUE(slice.has_value());
  device_ = std::make_unique<GpuDevice>(
      GpuDeviceOptions{.builtin_kernels_only = GetParam() == EngineKind::kCpu}, std::move(*slice),
      dma_, runner_, nullptr);
  dma_.set_owner(device_->dma_unmap_listener());
  ASSERT_TRUE(backend_.AttachListener(*device_->dma_unmap_listener()).has_value());
  ASSERT_TRUE(Go(kResuming).has_value());
  auto written = Mig().WriteData(stream_);
  ASSERT_FALSE(written.has_value());
  EXPECT_EQ(written.error().code, EINVAL);
  EXPECT_EQ(Mig().SetState(kStop).error().code, EINVAL);
  EXPECT_EQ(Mig().GetState(), kError);
}

TEST_P(GpuMigrationTest, StopWaitsForTheCommandInFlightAndTakesNoMore) {
  constexpr uint64_t kBytes = 32 * kPageSize;  // Two pinned chunks.
  std::vector<uint32_t> source(kBytes / 4);
  for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<uint32_t>(i * 7);
  PutGuest(kDataIova, source);
  EnableQueue();
  std::thread stopper;
  std::atomic<bool> stop_returned{false};
  // Inside the COPY (its first chunk pinned), the VMM stops the device.
  dma_.set_pin_hook(1, [&] {
    stopper = std::thread([&] {
      EXPECT_TRUE(Go(kStop).has_value());
      stop_returned = true;
    });
    // The COPY goes on only once STOP holds the ring.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!device_->quiesced() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    EXPECT_FALSE(stop_returned);  // STOP waits for this entry.
  });
  std::memcpy(Guest(kRingIova), Copy(kCopySrcGuest, kDataIova, 0, kBytes).bytes, kEntrySize);
  std::memcpy(Guest(kRingIova + kEntrySize), Fill(0, kBytes, 0).bytes, kEntrySize);
  SetReg(kRegQueueTail, 2);
  SetReg(kRegDoorbell, 1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!stop_returned && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  ASSERT_TRUE(stop_returned);
  stopper.join();
  // At an entry boundary: the COPY whole, the FILL not taken.
  EXPECT_EQ(Reg(kRegQueueHead), 1u);
  std::vector<uint32_t> copied(source.size());
  ASSERT_TRUE(device_->RegionRead(VFIO_PCI_BAR2_REGION_INDEX, 0,
                                  std::as_writable_bytes(std::span(copied)))
                  .has_value());
  EXPECT_EQ(copied, source);
  ASSERT_TRUE(Go(kRunning).has_value());
  ASSERT_TRUE(device_->WaitIdle());
  EXPECT_EQ(Reg(kRegQueueHead), 2u);
}

INSTANTIATE_TEST_SUITE_P(Engines, GpuMigrationTest,
                         ::testing::Values(EngineKind::kVulkan, EngineKind::kCpu), EngineName);
INSTANTIATE_TEST_SUITE_P(Engines, GpuMigrationStreamTest,
                         ::testing::Values(EngineKind::kVulkan, EngineKind::kCpu), EngineName);

}  // namespace
}  // namespace umdev::vendor::gpu::testing
