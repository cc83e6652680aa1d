// EncodeRegionInfo: the kernel's region-info layout and capability chain.
#include "umdev/mdev_core/region_info.h"

#include <gtest/gtest.h>

#include <cstring>

namespace umdev {
namespace {

template <typename T>
T At(const std::vector<std::byte>& bytes, size_t offset) {
  T value{};
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

RegionInfo Bar2WithCaps() {
  RegionInfo info;
  info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP;
  info.size = 0x100000;
  info.sparse_mmap = {{0x0, 0x1000}, {0x8000, 0x8000}};
  info.type = RegionType{.type = 3, .subtype = 7};
  return info;
}

TEST(RegionInfoTest, PlainRegionIsJustTheStruct) {
  RegionInfo info{.flags = VFIO_REGION_INFO_FLAG_READ, .size = 256};
  const auto bytes = EncodeRegionInfo(VFIO_PCI_CONFIG_REGION_INDEX, info, 7ull << 40, 1024);
  ASSERT_EQ(bytes.size(), sizeof(vfio_region_info));
  const auto head = At<vfio_region_info>(bytes, 0);
  EXPECT_EQ(head.argsz, sizeof(vfio_region_info));
  EXPECT_EQ(head.flags, static_cast<uint32_t>(VFIO_REGION_INFO_FLAG_READ));
  EXPECT_EQ(head.index, static_cast<uint32_t>(VFIO_PCI_CONFIG_REGION_INDEX));
  EXPECT_EQ(head.cap_offset, 0u);
  EXPECT_EQ(head.size, 256u);
  EXPECT_EQ(head.offset, 7ull << 40);
}

TEST(RegionInfoTest, CapabilityChainLinksSparseMmapThenType) {
  const auto bytes = EncodeRegionInfo(2, Bar2WithCaps(), 0, 4096);
  const auto head = At<vfio_region_info>(bytes, 0);
  EXPECT_EQ(head.argsz, bytes.size());
  EXPECT_NE(head.flags & VFIO_REGION_INFO_FLAG_CAPS, 0u);
  ASSERT_EQ(head.cap_offset, sizeof(vfio_region_info));

  const auto sparse = At<vfio_region_info_cap_sparse_mmap>(bytes, head.cap_offset);
  EXPECT_EQ(sparse.header.id, VFIO_REGION_INFO_CAP_SPARSE_MMAP);
  EXPECT_EQ(sparse.header.version, 1);
  EXPECT_EQ(sparse.nr_areas, 2u);
  const auto second = At<vfio_region_sparse_mmap_area>(
      bytes, head.cap_offset + sizeof(vfio_region_info_cap_sparse_mmap) +
                 sizeof(vfio_region_sparse_mmap_area));
  EXPECT_EQ(second.offset, 0x8000u);
  EXPECT_EQ(second.size, 0x8000u);

  ASSERT_NE(sparse.header.next, 0u);
  EXPECT_EQ(sparse.header.next % 8, 0u);
  const auto type = At<vfio_region_info_cap_type>(bytes, sparse.header.next);
  EXPECT_EQ(type.header.id, VFIO_REGION_INFO_CAP_TYPE);
  EXPECT_EQ(type.header.next, 0u);
  EXPECT_EQ(type.type, 3u);
  EXPECT_EQ(type.subtype, 7u);
}

TEST(RegionInfoTest, MsixMappableIsABareHeaderAfterTheOthers) {
  RegionInfo info = Bar2WithCaps();
  info.msix_mappable = true;
  const auto bytes = EncodeRegionInfo(3, info, 0, 4096);
  const auto head = At<vfio_region_info>(bytes, 0);
  const auto sparse = At<vfio_info_cap_header>(bytes, head.cap_offset);
  const auto type = At<vfio_info_cap_header>(bytes, sparse.next);
  ASSERT_NE(type.next, 0u);
  EXPECT_EQ(type.next % 8, 0u);
  const auto msix = At<vfio_info_cap_header>(bytes, type.next);
  EXPECT_EQ(msix.id, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
  EXPECT_EQ(msix.version, 1);
  EXPECT_EQ(msix.next, 0u);
  EXPECT_EQ(bytes.size(), type.next + sizeof(vfio_info_cap_header)) << "no data after the header";
  EXPECT_EQ(head.argsz, bytes.size());

  RegionInfo alone{.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_MMAP,
                   .size = 0x4000};
  alone.msix_mappable = true;
  const auto only = EncodeRegionInfo(3, alone, 0, 4096);
  const auto only_head = At<vfio_region_info>(only, 0);
  EXPECT_NE(only_head.flags & VFIO_REGION_INFO_FLAG_CAPS, 0u);
  ASSERT_EQ(only_head.cap_offset, sizeof(vfio_region_info));
  EXPECT_EQ(At<vfio_info_cap_header>(only, only_head.cap_offset).id,
            VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
}

TEST(RegionInfoTest, TooSmallArgszGetsTheSizeNeededAndNoChain) {
  const size_t full = EncodeRegionInfo(2, Bar2WithCaps(), 0, 4096).size();
  const auto bytes = EncodeRegionInfo(2, Bar2WithCaps(), 0, sizeof(vfio_region_info));
  ASSERT_EQ(bytes.size(), sizeof(vfio_region_info));
  const auto head = At<vfio_region_info>(bytes, 0);
  EXPECT_EQ(head.argsz, full);
  EXPECT_NE(head.flags & VFIO_REGION_INFO_FLAG_CAPS, 0u);
  EXPECT_EQ(head.cap_offset, 0u);
}

}  // namespace
}  // namespace umdev
