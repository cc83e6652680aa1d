// The passthrough driver's kernel layer on real kernel VFIO: QEMU's edu
// device (1234:11e8) bound to vfio-pci behind an emulated IOMMU. Runs inside
// the guest passthrough_guest_test boots, which sets UMDEV_EDU_DEVICE (and
// UMDEV_EDU_PEERS: two edu functions behind a PCIe-to-PCI bridge, one IOMMU
// group); skips anywhere else.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "umdev/passthrough/host_vfio.h"

namespace umdev::passthrough {
namespace {

// edu's BAR0 (QEMU docs/specs/edu.rst).
constexpr uint64_t kId = 0x00, kLiveness = 0x04, kFactorial = 0x08, kStatus = 0x20;
constexpr uint64_t kIrqStatus = 0x24, kIrqRaise = 0x60, kIrqAck = 0x64;
constexpr uint64_t kDmaSource = 0x80, kDmaDest = 0x88, kDmaCount = 0x90, kDmaCommand = 0x98;
constexpr uint64_t kDmaBuffer = 0x40000;  // The device's 4 KiB buffer.
constexpr uint64_t kIova = 0x100000;      // Under edu's 28-bit DMA mask.

const char* EduAddress() { return std::getenv("UMDEV_EDU_DEVICE"); }

// Polls |done| for up to two seconds.
template <typename F>
bool WaitFor(F done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

bool Readable(int fd, int ms) {
  pollfd pfd{fd, POLLIN, 0};
  return poll(&pfd, 1, ms) == 1;
}

class EduKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (EduAddress() == nullptr) GTEST_SKIP() << "not in the passthrough guest (UMDEV_EDU_DEVICE)";
    kernel_ = SystemVfioKernel();
    auto address = pci::NormalizeAddress(EduAddress());
    ASSERT_TRUE(address.has_value());
    address_ = *address;
    const auto number = sysfs_.IommuGroupOf(address_);
    ASSERT_TRUE(number.has_value()) << address_ << " has no IOMMU group";
    auto group = HostGroup::Open(*kernel_, sysfs_, *number);
    ASSERT_TRUE(group.has_value()) << group.error().Describe();
    group_ = *group;
    auto container = HostContainer::Create(*kernel_, group_);
    ASSERT_TRUE(container.has_value()) << container.error().Describe();
    container_ = std::move(*container);
    auto device = HostDevice::Open(*kernel_, *group_, address_);
    ASSERT_TRUE(device.has_value()) << device.error().Describe();
    device_ = std::move(*device);
  }

  uint32_t Get(uint64_t offset) {
    uint32_t value = 0;
    auto got = device_->Read(VFIO_PCI_BAR0_REGION_INDEX, offset,
                             std::as_writable_bytes(std::span(&value, 1)));
    EXPECT_TRUE(got.has_value() && *got == 4) << (got ? "short" : got.error().Describe());
    return value;
  }
  void Put(uint64_t offset, uint64_t value, size_t size = 4) {
    auto put = device_->Write(VFIO_PCI_BAR0_REGION_INDEX, offset,
                              std::as_bytes(std::span(&value, 1)).first(size));
    EXPECT_TRUE(put.has_value() && *put == size) << (put ? "short" : put.error().Describe());
  }
  // Command register: memory decoding and bus mastering, as a driver sets.
  void EnableBusMaster() {
    uint16_t command = 0;
    ASSERT_TRUE(device_->Read(VFIO_PCI_CONFIG_REGION_INDEX, 4,
                              std::as_writable_bytes(std::span(&command, 1))).has_value());
    command |= 0x6;
    ASSERT_TRUE(device_->Write(VFIO_PCI_CONFIG_REGION_INDEX, 4,
                               std::as_bytes(std::span(&command, 1))).has_value());
  }

  pci::Sysfs sysfs_;
  std::unique_ptr<VfioKernel> kernel_;
  std::string address_;
  std::shared_ptr<HostGroup> group_;
  std::unique_ptr<HostContainer> container_;
  std::unique_ptr<HostDevice> device_;
};

TEST_F(EduKernelTest, ConfigSpaceAndRegionsAreTheDevices) {
  uint32_t ids = 0;
  ASSERT_TRUE(device_->Read(VFIO_PCI_CONFIG_REGION_INDEX, 0,
                            std::as_writable_bytes(std::span(&ids, 1))).has_value());
  EXPECT_EQ(ids, 0x11e81234u) << "vendor 1234, device 11e8";
  EXPECT_GE(device_->info().num_regions, static_cast<uint32_t>(VFIO_PCI_NUM_REGIONS));
  auto bar0 = device_->Region(VFIO_PCI_BAR0_REGION_INDEX);
  ASSERT_TRUE(bar0.has_value()) << bar0.error().Describe();
  EXPECT_EQ(bar0->size, 1u << 20);
  EXPECT_NE(bar0->flags & VFIO_REGION_INFO_FLAG_MMAP, 0u);
  EXPECT_EQ(bar0->mmap_fd, device_->fd());
  auto bar1 = device_->Region(VFIO_PCI_BAR1_REGION_INDEX);
  ASSERT_TRUE(bar1.has_value());
  EXPECT_EQ(bar1->size, 0u) << "edu has BAR0 only";
}

TEST_F(EduKernelTest, RegistersWorkThroughReadsWritesAndTheMappedBar) {
  EXPECT_EQ(Get(kId) & 0xff, 0xedu);
  Put(kLiveness, 0x12345678);
  EXPECT_EQ(Get(kLiveness), ~0x12345678u);
  Put(kFactorial, 5);
  ASSERT_TRUE(WaitFor([&] { return (Get(kStatus) & 1) == 0; }));
  EXPECT_EQ(Get(kFactorial), 120u);

  auto bar0 = device_->Region(VFIO_PCI_BAR0_REGION_INDEX);
  ASSERT_TRUE(bar0.has_value());
  auto mapped = Mapping::Map(bar0->mmap_fd, static_cast<off_t>(bar0->mmap_offset), bar0->size,
                             PROT_READ | PROT_WRITE, MAP_SHARED);
  ASSERT_TRUE(mapped.has_value()) << mapped.error().Describe();
  auto* regs = reinterpret_cast<volatile uint32_t*>(mapped->data());
  EXPECT_EQ(regs[kId / 4], Get(kId));
  regs[kLiveness / 4] = 0xa5a5a5a5;
  EXPECT_EQ(regs[kLiveness / 4], 0x5a5a5a5au);
}

TEST_F(EduKernelTest, DmaReachesMappedMemoryAtTheIovaTheIommuTranslates) {
  EnableBusMaster();
  UniqueFd ram(memfd_create("edu-dma", MFD_CLOEXEC));
  ASSERT_EQ(ftruncate(ram.get(), 2 * 4096), 0);
  auto local = Mapping::Map(ram.get(), 0, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED);
  ASSERT_TRUE(local.has_value());
  for (size_t i = 0; i < 4096; ++i) local->data()[i] = static_cast<std::byte>(i * 7 + 3);
  DmaMapRequest request;
  request.fd = UniqueFd(dup(ram.get()));
  request.iova = kIova;
  request.size = 2 * 4096;
  request.prot = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
  ASSERT_TRUE(container_->Map(std::move(request)).has_value());
  // RAM -> device buffer, then device buffer -> the second page.
  const auto transfer = [&](uint64_t source, uint64_t dest, uint64_t command) {
    Put(kDmaSource, source, 8);
    Put(kDmaDest, dest, 8);
    Put(kDmaCount, 4096, 8);
    Put(kDmaCommand, command, 8);
    return WaitFor([&] { return (Get(kDmaCommand) & 1) == 0; });
  };
  ASSERT_TRUE(transfer(kIova, kDmaBuffer, 1));
  ASSERT_TRUE(transfer(kDmaBuffer, kIova + 4096, 1 | 2));
  EXPECT_EQ(std::memcmp(local->data(), local->data() + 4096, 4096), 0)
      << "the page came back through the device";

  // The kernel's refusals, passed on: an overlap, and a partial unmap.
  DmaMapRequest again;
  again.fd = UniqueFd(dup(ram.get()));
  again.iova = kIova;
  again.size = 4096;
  again.prot = VFIO_DMA_MAP_FLAG_READ;
  auto overlap = container_->Map(std::move(again));
  ASSERT_FALSE(overlap.has_value());
  EXPECT_EQ(overlap.error().code, EEXIST) << overlap.error().Describe();
  auto partial = container_->Unmap(kIova, 4096);
  ASSERT_FALSE(partial.has_value()) << "type1v2 does not split a mapping";
  EXPECT_EQ(partial.error().code, EINVAL);
  EXPECT_EQ(container_->Unmap(kIova, 2 * 4096).value(), 2u * 4096);
  EXPECT_EQ(container_->mapping_count(), 0u);
}

// The kernel's dirty tracking: type1 cannot see what a device wrote, so
// every page mapped while tracking counts as dirty, and reading the bitmap
// clears it.
TEST_F(EduKernelTest, DirtyTrackingReportsTheMappedPages) {
  UniqueFd ram(memfd_create("edu-dirty", MFD_CLOEXEC));
  ASSERT_EQ(ftruncate(ram.get(), 4 * 4096), 0);
  DmaMapRequest request;
  request.fd = UniqueFd(dup(ram.get()));
  request.iova = kIova;
  request.size = 4 * 4096;
  request.prot = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
  ASSERT_TRUE(container_->Map(std::move(request)).has_value());
  auto started = container_->StartDirtyTracking();
  ASSERT_TRUE(started.has_value()) << started.error().Describe();
  auto bitmap = container_->DirtyBitmap(kIova, 4 * 4096, 4096);
  ASSERT_TRUE(bitmap.has_value()) << bitmap.error().Describe();
  ASSERT_EQ(bitmap->size(), 1u);
  EXPECT_EQ((*bitmap)[0] & 0xf, 0xfu) << "every mapped page";
  auto misaligned = container_->DirtyBitmap(kIova, 4 * 4096 + 1, 4096);
  EXPECT_FALSE(misaligned.has_value());
  EXPECT_TRUE(container_->StopDirtyTracking().has_value());
}

TEST_F(EduKernelTest, MsiAndIntxReachTheEventfdsGivenToTheKernel) {
  EnableBusMaster();
  UniqueFd msi(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  IrqSet set;
  set.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set.index = VFIO_PCI_MSI_IRQ_INDEX;
  set.count = 1;
  set.fds.emplace_back(dup(msi.get()));
  ASSERT_TRUE(device_->SetIrqs(set).has_value());
  Put(kIrqRaise, 0x1);
  EXPECT_TRUE(Readable(msi.get(), 2000)) << "MSI";
  EXPECT_EQ(Get(kIrqStatus) & 1, 1u);
  Put(kIrqAck, 0x1);
  IrqSet off;
  off.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
  off.index = VFIO_PCI_MSI_IRQ_INDEX;
  ASSERT_TRUE(device_->SetIrqs(off).has_value());

  UniqueFd intx(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  IrqSet line;
  line.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  line.index = VFIO_PCI_INTX_IRQ_INDEX;
  line.count = 1;
  line.fds.emplace_back(dup(intx.get()));
  ASSERT_TRUE(device_->SetIrqs(line).has_value());
  Put(kIrqRaise, 0x2);
  EXPECT_TRUE(Readable(intx.get(), 2000)) << "INTx";
  Put(kIrqAck, 0x2);
  IrqSet unmask;
  unmask.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
  unmask.index = VFIO_PCI_INTX_IRQ_INDEX;
  unmask.count = 1;
  EXPECT_TRUE(device_->SetIrqs(unmask).has_value());
}

TEST_F(EduKernelTest, AFunctionOnTheRootBusWithoutFlrIsNotReset) {
  ASSERT_EQ(device_->info().flags & VFIO_DEVICE_FLAGS_RESET, 0u) << "edu has no FLR or PM reset";
  auto reset = device_->Reset({group_});
  ASSERT_FALSE(reset.has_value());
  EXPECT_NE(reset.error().Describe().find("no bus reset"), std::string::npos)
      << reset.error().Describe();
  std::cout << "edu on the root bus: " << reset.error().Describe() << "\n";
}
// Two functions in one group: opened in one container, each its own fd.
TEST_F(EduKernelTest, BothFunctionsOfASharedGroupOpenInOneContainer) {
  const char* peers = std::getenv("UMDEV_EDU_PEERS");
  if (peers == nullptr) GTEST_SKIP() << "no shared group in this guest";
  std::string text(peers);
  const std::string first = text.substr(0, text.find(','));
  const std::string second = text.substr(text.find(',') + 1);
  const auto number = sysfs_.IommuGroupOf(first);
  ASSERT_TRUE(number.has_value());
  ASSERT_EQ(sysfs_.IommuGroupOf(second), number) << "one IOMMU group";
  auto group = HostGroup::Open(*kernel_, sysfs_, *number);
  ASSERT_TRUE(group.has_value()) << group.error().Describe();
  auto container = HostContainer::Create(*kernel_, *group);
  ASSERT_TRUE(container.has_value()) << container.error().Describe();
  std::vector<std::unique_ptr<HostDevice>> devices;
  for (const std::string& address : {first, second}) {
    auto device = HostDevice::Open(*kernel_, **group, address);
    ASSERT_TRUE(device.has_value()) << address << ": " << device.error().Describe();
    uint32_t ids = 0;
    ASSERT_TRUE((*device)->Read(VFIO_PCI_CONFIG_REGION_INDEX, 0,
                                std::as_writable_bytes(std::span(&ids, 1))).has_value());
    EXPECT_EQ(ids, 0x11e81234u) << address;
    devices.push_back(std::move(*device));
  }
  // Behind the bridge a bus reset is possible, and it reaches only this
  // group: with the group's fd the kernel does it.
  auto reset = devices[0]->Reset({*group});
  EXPECT_TRUE(reset.has_value()) << reset.error().Describe();
  auto without = devices[1]->Reset({});
  ASSERT_FALSE(without.has_value());
  EXPECT_EQ(without.error().code, EPERM) << without.error().Describe();
  devices.clear();
  // A second container for the same group: the kernel's EINVAL (a group is
  // in one container at a time).
  auto second_container = HostContainer::Create(*kernel_, *group);
  ASSERT_FALSE(second_container.has_value());
  EXPECT_EQ(second_container.error().code, EINVAL) << second_container.error().Describe();
}

}  // namespace
}  // namespace umdev::passthrough
