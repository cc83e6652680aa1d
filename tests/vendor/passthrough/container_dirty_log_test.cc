// ContainerDirtyLog: DMA logging a client asks for through the core,
// answered from its kernel container, against a scripted kernel.
#include "umdev/passthrough/container_dirty_log.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "umdev/mdev_core/region_info.h"
#include "vendor/passthrough/scripted_kernel.h"

namespace umdev::passthrough {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::ScriptedKernel;

TEST(FoldDirtyBitmapTest, ABigPageIsDirtyWhenAnyOfItsSmallPagesIs) {
  // 130 small pages: 0, 5, 64 and 129 dirty; folded by 4 into 33 pages.
  const std::vector<uint64_t> fine = {(uint64_t{1} << 0) | (uint64_t{1} << 5), 1, 2};
  const std::vector<uint64_t> folded = FoldDirtyBitmap(fine, 130, 4);
  ASSERT_EQ(folded.size(), 1u);
  EXPECT_EQ(folded[0], (uint64_t{1} << 0) | (uint64_t{1} << 1) | (uint64_t{1} << 16) |
                           (uint64_t{1} << 32));
  EXPECT_EQ(FoldDirtyBitmap(fine, 130, 1), (std::vector<uint64_t>{fine[0], 1, 2}));
  EXPECT_EQ(FoldDirtyBitmap({}, 0, 8), std::vector<uint64_t>{});
  // Bits past |pages| are not the caller's: ignored.
  EXPECT_EQ(FoldDirtyBitmap(std::vector<uint64_t>{~uint64_t{0}}, 2, 2), std::vector<uint64_t>{1});
}

class ContainerDirtyLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/container-dirty-log-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    root_ = dir;
    fs::create_directories(root_ / "bus/pci/drivers/vfio-pci");
    fs::create_directories(root_ / "kernel/iommu_groups/7/devices");
    const fs::path device = root_ / "bus/pci/devices/0000:01:00.0";
    fs::create_directories(device);
    fs::create_directory_symlink(root_ / "bus/pci/drivers/vfio-pci", device / "driver");
    fs::create_directory_symlink(root_ / "kernel/iommu_groups/7", device / "iommu_group");
    umdev::RegionInfo bar0{.flags = VFIO_REGION_INFO_FLAG_READ, .size = 0x1000};
    kernel_.region_replies[0] = EncodeRegionInfo(0, bar0, 0, 4096);
    driver_ = std::make_unique<PassthroughDriver>(registry_, kernel_, pci::Sysfs(root_.string()));
    ASSERT_TRUE(driver_->Add("0000:01:00.0").has_value());
  }
  void TearDown() override {
    device_.reset();
    group_file_.reset();
    driver_.reset();
    fs::remove_all(root_);
  }
  // A client session: the group in a container of its own, the device open.
  void Open() {
    auto group = registry_.FindGroupOfDevice("0000:01:00.0").value();
    group_file_ = group->Open().value();
    auto container = registry_.CreateContainer();
    ASSERT_TRUE(group_file_->SetContainer(container).has_value());
    ASSERT_TRUE(container->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
    auto device = group_file_->GetDeviceFd("0000:01:00.0");
    ASSERT_TRUE(device.has_value()) << device.error().Describe();
    device_ = std::move(*device);
  }

  fs::path root_;
  ScriptedKernel kernel_;
  Registry registry_{RegistryOptions{.removal_bound = 200ms, .request_interval = 20ms}};
  std::unique_ptr<PassthroughDriver> driver_;
  std::shared_ptr<GroupFile> group_file_;
  std::unique_ptr<DeviceFile> device_;
};

TEST_F(ContainerDirtyLogTest, TheClientsLoggingIsItsContainersTracking) {
  Open();
  ASSERT_TRUE(device_->DmaLoggingSupported().has_value());
  const std::vector<SparseMmapArea> ranges = {{0x100000, 0x100000}};
  EXPECT_EQ(device_->DmaLoggingReport(0x100000, 0x10000, 4096).error().code, EINVAL)
      << "no report before a start";
  ASSERT_TRUE(device_->DmaLoggingStart(ranges, 4096).has_value());
  EXPECT_TRUE(kernel_.dirty_tracking);
  EXPECT_EQ(device_->DmaLoggingStart(ranges, 4096).error().code, EBUSY);

  // Pages 0, 1 and 9 of 16 (4 KiB): as the kernel said, then in 16 KiB
  // pages (0-3 -> 0, 8-11 -> 2).
  kernel_.dirty_bitmap = {0b10'0000'0011};
  auto fine = device_->DmaLoggingReport(0x100000, 0x10000, 4096);
  ASSERT_TRUE(fine.has_value()) << fine.error().Describe();
  EXPECT_EQ(*fine, std::vector<uint64_t>{0b10'0000'0011});
  EXPECT_EQ(kernel_.last_bitmap_iova, 0x100000u);
  auto coarse = device_->DmaLoggingReport(0x100000, 0x10000, 16384);
  ASSERT_TRUE(coarse.has_value()) << coarse.error().Describe();
  EXPECT_EQ(*coarse, std::vector<uint64_t>{0b101});
  EXPECT_EQ(device_->DmaLoggingReport(0x100800, 0x1000, 4096).error().code, EINVAL)
      << "off the host IOMMU's pages";

  ASSERT_TRUE(device_->DmaLoggingStop().has_value());
  EXPECT_FALSE(kernel_.dirty_tracking);
  EXPECT_EQ(device_->DmaLoggingStop().error().code, EINVAL);
}

TEST_F(ContainerDirtyLogTest, PagesUnderFourKiBAreRefused) {
  Open();
  const std::vector<SparseMmapArea> ranges = {{0x0, 0x2000}};
  auto refused = device_->DmaLoggingStart(ranges, 2048);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, EINVAL);
  EXPECT_NE(refused.error().Describe().find("0x1000-byte pages"), std::string::npos);
  EXPECT_FALSE(kernel_.dirty_tracking);
}

TEST_F(ContainerDirtyLogTest, AClientThatLeavesLoggingLeavesNothingOn) {
  Open();
  const std::vector<SparseMmapArea> ranges = {{0x0, 0x10000}};
  ASSERT_TRUE(device_->DmaLoggingStart(ranges, 4096).has_value());
  device_.reset();
  group_file_.reset();
  EXPECT_FALSE(kernel_.dirty_tracking) << "stopped at the close";
  Open();
  EXPECT_TRUE(device_->DmaLoggingStart(ranges, 4096).has_value()) << "the next client starts";
}

}  // namespace
}  // namespace umdev::passthrough
