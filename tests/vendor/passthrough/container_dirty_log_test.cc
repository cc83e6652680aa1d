// ContainerDirtyLog: DMA logging a client asks for through the core,
// answered from its kernel container, against a scripted kernel.
#include "umdev/passthrough/container_dirty_log.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <filesystem>

#include "umdev/mdev_core/region_info.h"
#include "vendor/passthrough/scripted_kernel.h"

namespace umdev::passthrough {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::ScriptedKernel;

TEST(MarkDirtyPagesTest, ABigPageIsDirtyWhenAnyOfItsSmallPagesIs) {
  // 130 small pages: 0, 5, 64 and 129 dirty; by 4 into 33 pages.
  const std::vector<uint64_t> fine = {(uint64_t{1} << 0) | (uint64_t{1} << 5), 1, 2};
  std::vector<uint64_t> out(1);
  MarkDirtyPages(fine, 130, 0, 4, out);
  EXPECT_EQ(out[0], (uint64_t{1} << 0) | (uint64_t{1} << 1) | (uint64_t{1} << 16) |
                        (uint64_t{1} << 32));
  std::vector<uint64_t> same(3);
  MarkDirtyPages(fine, 130, 0, 1, same);
  EXPECT_EQ(same, (std::vector<uint64_t>{fine[0], 1, 2}));
  // From small page 62 of the report on: 0 -> 62, 5 -> 67, 64 -> 126.
  std::vector<uint64_t> shifted(3);
  MarkDirtyPages(fine, 128, 62, 1, shifted);
  EXPECT_EQ(shifted, (std::vector<uint64_t>{uint64_t{1} << 62,
                                            (uint64_t{1} << 3) | (uint64_t{1} << 62), 0}));
  // Bits past |pages| are not the mapping's, and nothing lands past |out|.
  std::vector<uint64_t> small(1);
  MarkDirtyPages(std::vector<uint64_t>{~uint64_t{0}}, 2, 0, 2, small);
  EXPECT_EQ(small, std::vector<uint64_t>{1});
  MarkDirtyPages(std::vector<uint64_t>{1}, 1, 64 * 8, 1, small);
  EXPECT_EQ(small, std::vector<uint64_t>{1});
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
    container_.reset();
    driver_.reset();
    fs::remove_all(root_);
  }
  // A client session: the group in a container of its own, the device open.
  void Open() {
    auto group = registry_.FindGroupOfDevice("0000:01:00.0").value();
    group_file_ = group->Open().value();
    container_ = registry_.CreateContainer();
    ASSERT_TRUE(group_file_->SetContainer(container_).has_value());
    ASSERT_TRUE(container_->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
    auto device = group_file_->GetDeviceFd("0000:01:00.0");
    ASSERT_TRUE(device.has_value()) << device.error().Describe();
    device_ = std::move(*device);
  }

  // Guest memory of |size| bytes mapped for the device at |iova|.
  void Map(uint64_t iova, uint64_t size) {
    UniqueFd ram(memfd_create("dirty-log-ram", MFD_CLOEXEC));
    ASSERT_EQ(ftruncate(ram.get(), static_cast<off_t>(size)), 0);
    DmaMapRequest request;
    request.fd = std::move(ram);
    request.iova = iova;
    request.size = size;
    request.prot = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    auto mapped = container_->iommu()->Map(std::move(request));
    ASSERT_TRUE(mapped.has_value()) << mapped.error().Describe();
  }

  fs::path root_;
  ScriptedKernel kernel_;
  Registry registry_{RegistryOptions{.removal_bound = 200ms, .request_interval = 20ms}};
  std::unique_ptr<PassthroughDriver> driver_;
  std::shared_ptr<GroupFile> group_file_;
  std::shared_ptr<Container> container_;
  std::unique_ptr<DeviceFile> device_;
};

TEST_F(ContainerDirtyLogTest, TheClientsLoggingIsItsContainersTracking) {
  Open();
  Map(0x100000, 0x10000);
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
  auto cut = device_->DmaLoggingReport(0x100000, 0x8000, 4096);
  ASSERT_FALSE(cut.has_value());
  EXPECT_EQ(cut.error().code, EINVAL);
  EXPECT_NE(cut.error().Describe().find("cuts the mapping at 0x100000"), std::string::npos);

  ASSERT_TRUE(device_->DmaLoggingStop().has_value());
  EXPECT_FALSE(kernel_.dirty_tracking);
  EXPECT_EQ(device_->DmaLoggingStop().error().code, EINVAL);
}

// A report over two mappings with a gap reads each mapping alone and puts
// its pages where they are in the range; a huge range over nothing mapped
// is clean and asks the kernel nothing.
TEST_F(ContainerDirtyLogTest, AReportReadsEachMappingWhereItIs) {
  Open();
  Map(0x100000, 0x4000);  // Pages 0-3 of the report.
  Map(0x108000, 0x4000);  // Pages 8-11.
  const std::vector<SparseMmapArea> ranges = {{0x100000, 0x10000}};
  ASSERT_TRUE(device_->DmaLoggingStart(ranges, 4096).has_value());
  kernel_.dirty_bitmap = {0b0110};
  auto report = device_->DmaLoggingReport(0x100000, 0x10000, 4096);
  ASSERT_TRUE(report.has_value()) << report.error().Describe();
  EXPECT_EQ(*report, std::vector<uint64_t>{0b0110'0000'0110});
  EXPECT_EQ(kernel_.last_bitmap_iova, 0x108000u);

  auto nothing = device_->DmaLoggingReport(uint64_t{1} << 40, uint64_t{1} << 40, uint64_t{1} << 30);
  ASSERT_TRUE(nothing.has_value()) << nothing.error().Describe();
  EXPECT_EQ(*nothing, std::vector<uint64_t>(16, 0));
  EXPECT_EQ(kernel_.last_bitmap_iova, 0x108000u) << "the kernel was not asked";
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
