// HostGroup, HostContainer and HostDevice against a scripted VfioKernel:
// every refusal with the kernel's errno and a message that says what to do,
// hostile region-info replies, and the kernel calls each operation makes.
// The same classes on real kernel VFIO: passthrough_guest_test.
#include "umdev/passthrough/host_vfio.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "umdev/mdev_core/region_info.h"
#include "vendor/passthrough/scripted_kernel.h"

namespace umdev::passthrough {
namespace {

namespace fs = std::filesystem;
using testing::AnyFd;
using testing::ScriptedKernel;

class HostVfioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/host-vfio-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    root_ = dir;
    fs::create_directories(root_ / "bus/pci/drivers/e1000e");
    fs::create_directories(root_ / "bus/pci/drivers/vfio-pci");
    fs::create_directories(root_ / "kernel/iommu_groups/7/devices");
    for (const char* address : {"0000:01:00.0", "0000:01:00.1"}) {
      fs::create_directories(root_ / "bus/pci/devices" / address);
      fs::create_directory_symlink(root_ / "bus/pci/devices" / address,
                                   root_ / "kernel/iommu_groups/7/devices" / address);
    }
    fs::create_directory_symlink(root_ / "bus/pci/drivers/vfio-pci",
                                 root_ / "bus/pci/devices/0000:01:00.0/driver");
    fs::create_directory_symlink(root_ / "bus/pci/drivers/e1000e",
                                 root_ / "bus/pci/devices/0000:01:00.1/driver");
  }
  void TearDown() override { fs::remove_all(root_); }
  pci::Sysfs sysfs() const { return pci::Sysfs(root_.string()); }
  std::shared_ptr<HostGroup> Group() {
    auto group = HostGroup::Open(kernel_, sysfs(), 7);
    EXPECT_TRUE(group.has_value()) << group.error().Describe();
    return group.value_or(nullptr);
  }
  static DmaMapRequest Request(int fd, uint64_t iova, uint64_t size) {
    DmaMapRequest request;
    request.fd = UniqueFd(fd < 0 ? -1 : dup(fd));
    request.iova = iova;
    request.size = size;
    request.prot = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    return request;
  }

  fs::path root_;
  ScriptedKernel kernel_;
};

TEST_F(HostVfioTest, AGroupWithNoVfioOrStillBoundIsRefusedByName) {
  auto missing = HostGroup::Open(kernel_, sysfs(), 8);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, ENODEV);
  EXPECT_NE(missing.error().Describe().find("bound to vfio-pci"), std::string::npos);

  kernel_.group_flags = 0;
  auto not_viable = HostGroup::Open(kernel_, sysfs(), 7);
  ASSERT_FALSE(not_viable.has_value());
  EXPECT_EQ(not_viable.error().code, EBUSY);
  EXPECT_NE(not_viable.error().Describe().find("0000:01:00.1 (e1000e) still bound"),
            std::string::npos)
      << not_viable.error().Describe();
  EXPECT_EQ(not_viable.error().Describe().find("0000:01:00.0"), std::string::npos)
      << "the vfio-pci member is not named";
}

TEST_F(HostVfioTest, AContainerNeedsType1v2AndLeavesTheGroupWhenDestroyed) {
  kernel_.type1v2 = false;
  auto refused = HostContainer::Create(kernel_, Group());
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ENOTSUP);
  EXPECT_EQ(kernel_.set_container_calls, 0);

  kernel_.type1v2 = true;
  {
    auto container = HostContainer::Create(kernel_, Group());
    ASSERT_TRUE(container.has_value()) << container.error().Describe();
    EXPECT_EQ(kernel_.set_container_calls, 1);
  }
  EXPECT_EQ(kernel_.unset_container_calls, 1);
}

TEST_F(HostVfioTest, MapsOnlySharedWholePagesAndExplainsTheKernelsRefusals) {
  auto container = HostContainer::Create(kernel_, Group());
  ASSERT_TRUE(container.has_value());
  UniqueFd ram(memfd_create("guest-ram", MFD_CLOEXEC));
  ASSERT_EQ(ftruncate(ram.get(), 1 << 20), 0);

  auto no_fd = (*container)->Map(Request(-1, 0x100000, 0x1000));
  ASSERT_FALSE(no_fd.has_value());
  EXPECT_EQ(no_fd.error().code, EINVAL);
  EXPECT_NE(no_fd.error().Describe().find("memory-backend-memfd,share=on"), std::string::npos);
  EXPECT_EQ((*container)->Map(Request(ram.get(), 0x100800, 0x1000)).error().code, EINVAL);
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  UniqueFd pipe_read(pipe_fds[0]), pipe_write(pipe_fds[1]);
  auto pipe_map = (*container)->Map(Request(pipe_read.get(), 0x100000, 0x1000));
  ASSERT_FALSE(pipe_map.has_value());
  EXPECT_NE(pipe_map.error().Describe().find("not a memory file"), std::string::npos);
  EXPECT_EQ((*container)->Map(Request(ram.get(), 0x100000, 2 << 20)).error().code, EINVAL)
      << "past the end of the memory file";
  EXPECT_EQ((*container)->Map(Request(ram.get(), 0x100000, 0)).error().code, EINVAL);
  DmaMapRequest no_access = Request(ram.get(), 0x100000, 0x1000);
  no_access.prot = 0;
  EXPECT_EQ((*container)->Map(std::move(no_access)).error().code, EINVAL);

  kernel_.map_error = ENOMEM;
  auto locked = (*container)->Map(Request(ram.get(), 0x100000, 0x1000));
  ASSERT_FALSE(locked.has_value());
  EXPECT_EQ(locked.error().code, ENOMEM);
  EXPECT_NE(locked.error().Describe().find("RLIMIT_MEMLOCK"), std::string::npos);
  kernel_.map_error = EEXIST;
  EXPECT_EQ((*container)->Map(Request(ram.get(), 0x100000, 0x1000)).error().code, EEXIST);
  EXPECT_EQ((*container)->mapping_count(), 0u) << "nothing kept of a refused map";

  kernel_.map_error = 0;
  ASSERT_TRUE((*container)->Map(Request(ram.get(), 0x100000, 0x2000)).has_value());
  ASSERT_TRUE((*container)->Map(Request(ram.get(), 0x200000, 0x1000)).has_value());
  EXPECT_EQ((*container)->mapping_count(), 2u);
  EXPECT_EQ((*container)->mapped_bytes(), 0x3000u);
  EXPECT_EQ((*container)->Unmap(0x100000, 0x2000).value(), 0x2000u);
  EXPECT_EQ((*container)->mapping_count(), 1u);
  EXPECT_EQ((*container)->UnmapAll().value(), 0x1000u);
  EXPECT_TRUE(kernel_.mapped.empty());
}

TEST_F(HostVfioTest, MappingsAreChargedToTheDaemonsLockedMemoryBudget) {
  auto account = std::make_shared<pinning::LockedMemoryAccount>(0x3000);
  auto container = HostContainer::Create(kernel_, Group(), account);
  ASSERT_TRUE(container.has_value());
  UniqueFd ram(memfd_create("guest-ram", MFD_CLOEXEC));
  ASSERT_EQ(ftruncate(ram.get(), 1 << 20), 0);
  ASSERT_TRUE((*container)->Map(Request(ram.get(), 0x100000, 0x2000)).has_value());
  EXPECT_EQ(account->used(), 0x2000u);
  auto over = (*container)->Map(Request(ram.get(), 0x200000, 0x2000));
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code, ENOMEM);
  EXPECT_NE(over.error().Describe().find("locked_memory_bytes"), std::string::npos)
      << over.error().Describe();
  EXPECT_EQ(kernel_.mapped.size(), 1u) << "refused before the kernel pinned anything";
  kernel_.map_error = EEXIST;
  EXPECT_EQ((*container)->Map(Request(ram.get(), 0x300000, 0x1000)).error().code, EEXIST);
  EXPECT_EQ(account->used(), 0x2000u) << "a map the kernel refused is not charged";
  kernel_.map_error = 0;
  ASSERT_TRUE((*container)->Unmap(0x100000, 0x2000).has_value());
  EXPECT_EQ(account->used(), 0u);
  ASSERT_TRUE((*container)->Map(Request(ram.get(), 0x100000, 0x3000)).has_value());
  container->reset();
  EXPECT_EQ(account->used(), 0u) << "given back when the session's container goes";
}

TEST_F(HostVfioTest, RegionsAreTheKernelsWithTheDeviceFdToMap) {
  umdev::RegionInfo bar0;
  bar0.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP;
  bar0.size = 0x100000;
  bar0.sparse_mmap = {{0, 0x1000}, {0x3000, 0xfd000}};
  bar0.type = RegionType{1, 2};
  bar0.msix_mappable = true;
  kernel_.region_replies[0] = EncodeRegionInfo(0, bar0, 0x40000000, 4096);
  auto group = Group();
  auto container = HostContainer::Create(kernel_, group);
  ASSERT_TRUE(container.has_value());
  auto device = HostDevice::Open(kernel_, *group, "0000:01:00.0");
  ASSERT_TRUE(device.has_value()) << device.error().Describe();
  auto region = (*device)->Region(0);
  ASSERT_TRUE(region.has_value()) << region.error().Describe();
  EXPECT_EQ(region->flags, bar0.flags);
  EXPECT_EQ(region->size, bar0.size);
  ASSERT_EQ(region->sparse_mmap.size(), 2u);
  EXPECT_EQ(region->sparse_mmap[1].offset, 0x3000u);
  EXPECT_EQ(region->sparse_mmap[1].size, 0xfd000u);
  ASSERT_TRUE(region->type.has_value());
  EXPECT_EQ(region->type->subtype, 2u);
  EXPECT_TRUE(region->msix_mappable) << "relayed, so the client may map the MSI-X table's BAR";
  EXPECT_EQ(region->mmap_fd, (*device)->fd());
  EXPECT_EQ(region->mmap_offset, 0x40000000u);

  std::byte word[4];
  ASSERT_TRUE((*device)->Read(0, 0x8, word).has_value());
  EXPECT_EQ(kernel_.last_offset, 0x40000008u) << "at the region's offset in the device fd";
  EXPECT_EQ((*device)->Read(0, 0xffffe, word).error().code, EINVAL) << "past the region";
  EXPECT_EQ((*device)->Write(0, ~uint64_t{0}, word).error().code, EINVAL);
  EXPECT_EQ((*device)->Region(9).error().code, EINVAL) << "the device has 9 regions";
}

TEST_F(HostVfioTest, HostileRegionRepliesAreRefused) {
  umdev::RegionInfo bar;
  bar.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_MMAP;
  bar.size = 0x2000;
  bar.sparse_mmap = {{0, 0x1000}};
  std::vector<std::byte> reply = EncodeRegionInfo(2, bar, 0, 4096);
  uint64_t offset = 0;
  ASSERT_TRUE(ParseRegionInfo(reply, &offset).has_value());
  vfio_region_info head;
  std::memcpy(&head, reply.data(), sizeof(head));

  // The chain pointing outside the reply, at itself, and a sparse area
  // count past its end.
  auto patched = [&](auto change) {
    std::vector<std::byte> copy = reply;
    change(copy);
    return ParseRegionInfo(copy, &offset);
  };
  EXPECT_EQ(patched([&](auto& r) {
              vfio_region_info h = head;
              h.cap_offset = static_cast<uint32_t>(r.size());
              std::memcpy(r.data(), &h, sizeof(h));
            }).error().code,
            EIO);
  EXPECT_EQ(patched([&](auto& r) {
              vfio_info_cap_header cap;
              std::memcpy(&cap, r.data() + head.cap_offset, sizeof(cap));
              cap.next = head.cap_offset;
              std::memcpy(r.data() + head.cap_offset, &cap, sizeof(cap));
            }).error().code,
            EIO);
  EXPECT_EQ(patched([&](auto& r) {
              vfio_region_info_cap_sparse_mmap sparse;
              std::memcpy(&sparse, r.data() + head.cap_offset, sizeof(sparse));
              sparse.nr_areas = 0xffffffff;
              std::memcpy(r.data() + head.cap_offset, &sparse, sizeof(sparse));
            }).error().code,
            EIO);
  EXPECT_EQ(ParseRegionInfo(std::span(reply).first(8), &offset).error().code, EIO);
}

TEST_F(HostVfioTest, IrqSetsGoToTheKernelWithTheClientsEventfds) {
  auto group = Group();
  auto container = HostContainer::Create(kernel_, group);
  auto device = HostDevice::Open(kernel_, *group, "0000:01:00.0");
  ASSERT_TRUE(device.has_value());
  IrqSet set;
  set.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set.index = VFIO_PCI_MSIX_IRQ_INDEX;
  set.start = 0;
  set.count = 2;
  set.fds.push_back(AnyFd());
  set.fds.emplace_back();  // De-assigns vector 1.
  const int32_t first = set.fds[0].get();
  ASSERT_TRUE((*device)->SetIrqs(set).has_value());
  EXPECT_EQ(kernel_.last_irq_index, VFIO_PCI_MSIX_IRQ_INDEX);
  EXPECT_EQ(kernel_.last_irq_count, 2u);
  ASSERT_EQ(kernel_.last_irq_data.size(), 8u);
  int32_t fds[2];
  std::memcpy(fds, kernel_.last_irq_data.data(), sizeof(fds));
  EXPECT_EQ(fds[0], first);
  EXPECT_EQ(fds[1], -1);
}

TEST_F(HostVfioTest, ResetIsTheFunctionsOrABusResetWithEveryGroupHeld) {
  auto group = Group();
  auto container = HostContainer::Create(kernel_, group);
  auto device = HostDevice::Open(kernel_, *group, "0000:01:00.0");
  ASSERT_TRUE(device.has_value());
  // No FLR and a root-bus function: the kernel's errno, with why.
  auto no_reset = (*device)->Reset({group});
  ASSERT_FALSE(no_reset.has_value());
  EXPECT_EQ(no_reset.error().code, ENODEV);
  EXPECT_NE(no_reset.error().Describe().find("no bus reset"), std::string::npos);
  EXPECT_EQ(kernel_.resets + kernel_.hot_resets, 0);

  // A bus reset reaching only the held group: its fd goes to the kernel.
  kernel_.hot_reset_error = 0;
  kernel_.hot_reset_devices = {{7, 0, 1, 0}, {7, 0, 1, 1}};
  ASSERT_TRUE((*device)->Reset({group}).has_value());
  EXPECT_EQ(kernel_.hot_resets, 1);
  EXPECT_EQ(kernel_.hot_reset_group_fds, std::vector<int32_t>{group->fd()});
  // One that would also reach another group's device is refused by name.
  kernel_.hot_reset_devices.push_back({9, 0, 1, (2 << 3) | 0});
  auto other = (*device)->Reset({group});
  ASSERT_FALSE(other.has_value());
  EXPECT_EQ(other.error().code, EPERM);
  EXPECT_NE(other.error().Describe().find("0000:01:02.0, in IOMMU group 9"), std::string::npos)
      << other.error().Describe();
  EXPECT_EQ(kernel_.hot_resets, 1);

  // A function the kernel can reset alone never needs the bus.
  kernel_.device_info.flags |= VFIO_DEVICE_FLAGS_RESET;
  auto resettable = HostDevice::Open(kernel_, *group, "0000:01:00.0");
  ASSERT_TRUE(resettable.has_value());
  EXPECT_TRUE((*resettable)->Reset({}).has_value());
  EXPECT_EQ(kernel_.resets, 1);
}

}  // namespace
}  // namespace umdev::passthrough
