// mtty through DeviceOps: PCI identity, BAR registers, interrupts, reset,
// the loopback far end, attributes and the parent's port budget.
#include <linux/pci_regs.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "mtty_test_util.h"
#include "umdev/mdev_core/pci_config_space.h"
#include "umdev/control/server.h"
#include "umdev/mdev_core/registry.h"

namespace umdev::vendor::serial {
namespace {

using namespace testing;  // NOLINT: the test helpers.

constexpr uint32_t kConfig = VFIO_PCI_CONFIG_REGION_INDEX;
constexpr uint32_t kIntx = VFIO_PCI_INTX_IRQ_INDEX;
constexpr uint32_t kMsi = VFIO_PCI_MSI_IRQ_INDEX;

class MttyDeviceTest : public ::testing::Test {
 protected:
  std::unique_ptr<DeviceOps> Make(const std::string& type = "1") {
    auto ops = Probe(*parent_, type, dma_);
    EXPECT_TRUE(ops.has_value());
    return ops.has_value() ? std::move(*ops) : nullptr;
  }
  uint32_t Config32(DeviceOps& ops, uint64_t offset) {
    uint32_t value = 0;
    EXPECT_EQ(ops.RegionRead(kConfig, offset, std::as_writable_bytes(std::span(&value, 1))), 4u);
    return value;
  }
  uint8_t Config8(DeviceOps& ops, uint64_t offset) {
    std::byte value{};
    EXPECT_EQ(ops.RegionRead(kConfig, offset, std::span(&value, 1)), 1u);
    return std::to_integer<uint8_t>(value);
  }

  std::shared_ptr<MttyParent> parent_ = MttyParent::Create().value();
  NoDma dma_;
};

TEST_F(MttyDeviceTest, PciIdentity) {
  auto ops = Make("2");
  EXPECT_EQ(Config32(*ops, PCI_VENDOR_ID), 0x32534348u);
  EXPECT_EQ(Config32(*ops, PCI_SUBSYSTEM_VENDOR_ID), 0x32534348u);
  EXPECT_EQ(Config32(*ops, PCI_CLASS_REVISION), 0x07000210u);
  EXPECT_EQ(Config8(*ops, PCI_INTERRUPT_PIN), 1);
  // BAR0 and BAR1: I/O, 8 bytes (sizing reads back ~7 with the I/O bit).
  for (unsigned bar = 0; bar < 2; ++bar) {
    const uint64_t offset = PCI_BASE_ADDRESS_0 + 4 * bar;
    EXPECT_EQ(Config32(*ops, offset) & PCI_BASE_ADDRESS_SPACE_IO, 1u);
    const uint32_t ones = 0xffffffff;
    ASSERT_TRUE(ops->RegionWrite(kConfig, offset, std::as_bytes(std::span(&ones, 1))).has_value());
    EXPECT_EQ(Config32(*ops, offset) & 0xffff, 0xfff9u);
  }
  EXPECT_EQ(Config32(*ops, PCI_BASE_ADDRESS_2), 0u);
  // An MSI capability in the list.
  ASSERT_NE(Config8(*ops, PCI_STATUS) & PCI_STATUS_CAP_LIST, 0);
  const uint8_t cap = Config8(*ops, PCI_CAPABILITY_LIST);
  EXPECT_EQ(Config8(*ops, cap), PCI_CAP_ID_MSI);
}

TEST_F(MttyDeviceTest, RegionsAndIrqInfo) {
  auto one = Make("1");
  auto two = Make("2");
  EXPECT_EQ(one->GetInfo().flags, VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET);
  EXPECT_EQ(one->GetInfo().num_regions, VFIO_PCI_NUM_REGIONS);
  EXPECT_EQ(one->GetRegionInfo(kConfig)->size, PciConfigSpace::kConventionalSize);
  EXPECT_EQ(one->GetRegionInfo(0)->size, 8u);
  EXPECT_EQ(one->GetRegionInfo(1)->size, 0u);
  EXPECT_EQ(two->GetRegionInfo(1)->size, 8u);
  EXPECT_EQ(two->GetRegionInfo(2)->size, 0u);
  EXPECT_EQ(Errno(one->GetRegionInfo(VFIO_PCI_NUM_REGIONS)), EINVAL);
  EXPECT_EQ(one->GetIrqInfo(kIntx)->flags,
            VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED);
  EXPECT_EQ(one->GetIrqInfo(kMsi)->count, 1u);
  EXPECT_EQ(one->GetIrqInfo(VFIO_PCI_MSIX_IRQ_INDEX)->count, 0u);
  EXPECT_EQ(Errno(one->GetIrqInfo(VFIO_PCI_NUM_IRQS)), EINVAL);
}

TEST_F(MttyDeviceTest, BarRegistersAtEveryOffset) {
  auto ops = Make("2");
  for (unsigned bar = 0; bar < 2; ++bar) {
    SCOPED_TRACE(bar);
    EXPECT_EQ(ReadReg(*ops, bar, reg::kIer), 0);
    EXPECT_EQ(ReadReg(*ops, bar, reg::kIirFcr), iir::kNone);
    WriteReg(*ops, bar, reg::kLcr, 0x03);
    EXPECT_EQ(ReadReg(*ops, bar, reg::kLcr), 0x03);
    WriteReg(*ops, bar, reg::kMcr, 0x0b);
    EXPECT_EQ(ReadReg(*ops, bar, reg::kMcr), 0x0b);
    EXPECT_EQ(ReadReg(*ops, bar, reg::kLsr), lsr::kThre | lsr::kTemt);
    EXPECT_EQ(ReadReg(*ops, bar, reg::kMsr) & msr::kInputs, msr::kCts | msr::kDsr | msr::kDcd);
    WriteReg(*ops, bar, reg::kScr, static_cast<uint8_t>(0x40 + bar));
    EXPECT_EQ(ReadReg(*ops, bar, reg::kScr), 0x40 + bar);
    WriteReg(*ops, bar, reg::kIer, 0x0f);
    EXPECT_EQ(ReadReg(*ops, bar, reg::kIer), 0x0f);
  }
  // The ports are independent.
  EXPECT_EQ(ReadReg(*ops, 0, reg::kScr), 0x40);
}

TEST_F(MttyDeviceTest, MultiByteAccessIsOneAccessPerRegister) {
  auto ops = Make();
  const std::array<std::byte, 2> lcr_mcr{std::byte{0x03}, std::byte{0x08}};
  EXPECT_EQ(ops->RegionWrite(0, reg::kLcr, lcr_mcr), 2u);
  std::array<std::byte, 8> all{};
  EXPECT_EQ(ops->RegionRead(0, 0, all), 8u);
  EXPECT_EQ(std::to_integer<uint8_t>(all[reg::kLcr]), 0x03);
  EXPECT_EQ(std::to_integer<uint8_t>(all[reg::kMcr]), 0x08);
}

TEST_F(MttyDeviceTest, BadBarAccessIsEinval) {
  auto ops = Make();
  std::byte byte{};
  std::array<std::byte, 2> two{};
  EXPECT_EQ(Errno(ops->RegionRead(0, 8, std::span(&byte, 1))), EINVAL);
  EXPECT_EQ(Errno(ops->RegionRead(0, 7, two)), EINVAL);
  EXPECT_EQ(Errno(ops->RegionWrite(0, 100, std::span(&byte, 1))), EINVAL);
  EXPECT_EQ(Errno(ops->RegionRead(0, 0, std::span<std::byte>())), EINVAL);
  EXPECT_EQ(Errno(ops->RegionRead(1, 0, std::span(&byte, 1))), EINVAL) << "mtty-1 has no BAR1";
  EXPECT_EQ(Errno(ops->RegionRead(VFIO_PCI_ROM_REGION_INDEX, 0, std::span(&byte, 1))), EINVAL);
  EXPECT_EQ(Errno(ops->RegionRead(kConfig, 256, std::span(&byte, 1))), EINVAL);
}

TEST_F(MttyDeviceTest, LoopbackFarEndEchoesAndOverrunsWhenFull) {
  auto ops = Make();
  WriteReg(*ops, 0, reg::kIirFcr, fcr::kEnable);
  for (int i = 0; i < 16; ++i) WriteReg(*ops, 0, reg::kRbrThr, static_cast<uint8_t>('a' + i));
  EXPECT_EQ(ReadReg(*ops, 0, reg::kLsr) & lsr::kOverrun, 0);
  WriteReg(*ops, 0, reg::kRbrThr, '!');  // The 17th byte finds the receiver full.
  EXPECT_EQ(ReadReg(*ops, 0, reg::kLsr) & (lsr::kOverrun | lsr::kDataReady | lsr::kThre),
            lsr::kOverrun | lsr::kDataReady | lsr::kThre);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(ReadReg(*ops, 0, reg::kRbrThr), 'a' + i);
  EXPECT_EQ(ReadReg(*ops, 0, reg::kLsr) & lsr::kDataReady, 0);
}

// INTx: the device's line through a real eventfd, automasked, re-signalled
// at unmask while the UART still has an interrupt pending.
TEST_F(MttyDeviceTest, IntxSignalsMasksAndResignalsOnUnmask) {
  auto ops = Make();
  Efd trigger;
  ASSERT_TRUE(ApplyIrqs(*ops, EventfdSet(kIntx, VFIO_IRQ_SET_ACTION_TRIGGER, trigger.Dup())));
  WriteReg(*ops, 0, reg::kIer, ier::kRxData);
  WriteReg(*ops, 0, reg::kRbrThr, 'x');  // Loopback: RX data at trigger 1.
  EXPECT_EQ(trigger.Take(), 1u);
  EXPECT_NE(Config8(*ops, PCI_STATUS) & PCI_STATUS_INTERRUPT, 0);
  // The guest's EOI while the byte is unread: the line is still high.
  ASSERT_TRUE(ApplyIrqs(*ops, NoneSet(kIntx, VFIO_IRQ_SET_ACTION_UNMASK)));
  EXPECT_EQ(trigger.Take(), 1u);
  EXPECT_EQ(ReadReg(*ops, 0, reg::kRbrThr), 'x');
  EXPECT_EQ(Config8(*ops, PCI_STATUS) & PCI_STATUS_INTERRUPT, 0);
  ASSERT_TRUE(ApplyIrqs(*ops, NoneSet(kIntx, VFIO_IRQ_SET_ACTION_UNMASK)));
  EXPECT_EQ(trigger.Take(), 0u) << "serviced: no second interrupt";
  WriteReg(*ops, 0, reg::kRbrThr, 'y');
  EXPECT_EQ(trigger.Take(), 1u) << "unmasked again, a new edge signals";
}

TEST_F(MttyDeviceTest, IntxNotSignalledWhileMaskedOrDisabledInCommand) {
  auto ops = Make();
  Efd trigger;
  ASSERT_TRUE(ApplyIrqs(*ops, EventfdSet(kIntx, VFIO_IRQ_SET_ACTION_TRIGGER, trigger.Dup())));
  ASSERT_TRUE(ApplyIrqs(*ops, NoneSet(kIntx, VFIO_IRQ_SET_ACTION_MASK)));
  WriteReg(*ops, 0, reg::kIer, ier::kThre);
  EXPECT_EQ(trigger.Take(), 0u);
  ReadReg(*ops, 0, reg::kIirFcr);  // Serviced while masked.
  ASSERT_TRUE(ApplyIrqs(*ops, NoneSet(kIntx, VFIO_IRQ_SET_ACTION_UNMASK)));
  EXPECT_EQ(trigger.Take(), 0u) << "the line fell before the unmask";
  // Command.INTx_Disable holds the line back; clearing it delivers it.
  const uint16_t disable = PCI_COMMAND_INTX_DISABLE;
  ASSERT_TRUE(ops->RegionWrite(kConfig, PCI_COMMAND, std::as_bytes(std::span(&disable, 1))));
  WriteReg(*ops, 0, reg::kIer, 0);
  WriteReg(*ops, 0, reg::kIer, ier::kThre);
  EXPECT_EQ(trigger.Take(), 0u);
  const uint16_t enable = 0;
  ASSERT_TRUE(ops->RegionWrite(kConfig, PCI_COMMAND, std::as_bytes(std::span(&enable, 1))));
  EXPECT_EQ(trigger.Take(), 1u);
}

TEST_F(MttyDeviceTest, IntxResampleEventfdUnmasksAndResignals) {
  auto ops = Make();
  Efd trigger;
  Efd resample;
  EXPECT_EQ(Errno(ApplyIrqs(*ops, EventfdSet(kIntx, VFIO_IRQ_SET_ACTION_UNMASK, resample.Dup()))),
            EINVAL)
      << "INTx is not enabled yet";
  ASSERT_TRUE(ApplyIrqs(*ops, EventfdSet(kIntx, VFIO_IRQ_SET_ACTION_TRIGGER, trigger.Dup())));
  ASSERT_TRUE(ApplyIrqs(*ops, EventfdSet(kIntx, VFIO_IRQ_SET_ACTION_UNMASK, resample.Dup())));
  WriteReg(*ops, 0, reg::kIer, ier::kRxData);
  WriteReg(*ops, 0, reg::kRbrThr, 'x');
  EXPECT_EQ(trigger.Take(), 1u);
  resample.Signal();  // EOI with the byte unread.
  uint64_t got = 0;
  for (int i = 0; i < 2000 && got == 0; ++i) {
    got = trigger.Take();
    if (got == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(got, 1u);
  // De-assigning the resample fd is accepted; disabling INTx drops it too.
  ASSERT_TRUE(ApplyIrqs(*ops, EventfdSet(kIntx, VFIO_IRQ_SET_ACTION_UNMASK, UniqueFd())));
  ASSERT_TRUE(ApplyIrqs(*ops, NoneSet(kIntx, VFIO_IRQ_SET_ACTION_TRIGGER, 0)));
}

TEST_F(MttyDeviceTest, MsiSignalsEachRisingEdge) {
  auto ops = Make();
  Efd msi;
  ASSERT_TRUE(ApplyIrqs(*ops, EventfdSet(kMsi, VFIO_IRQ_SET_ACTION_TRIGGER, msi.Dup())));
  WriteReg(*ops, 0, reg::kIer, ier::kThre);
  EXPECT_EQ(msi.Take(), 1u);
  EXPECT_EQ(ReadReg(*ops, 0, reg::kIirFcr) & 0x0f, iir::kThre);
  WriteReg(*ops, 0, reg::kRbrThr, 'z');  // Loopback empties the THR again: a new edge.
  EXPECT_EQ(msi.Take(), 1u);
  Efd intx;
  EXPECT_EQ(Errno(ApplyIrqs(*ops, EventfdSet(kIntx, VFIO_IRQ_SET_ACTION_TRIGGER, intx.Dup()))),
            EINVAL)
      << "one interrupt mode at a time";
}

TEST_F(MttyDeviceTest, ResetRestoresRegistersAndConfig) {
  auto ops = Make();
  WriteReg(*ops, 0, reg::kIirFcr, fcr::kEnable | 0xc0);
  WriteReg(*ops, 0, reg::kLcr, 0x83);
  WriteReg(*ops, 0, reg::kRbrThr, 0x0c);
  WriteReg(*ops, 0, reg::kLcr, 0x03);
  WriteReg(*ops, 0, reg::kIer, 0x0f);
  WriteReg(*ops, 0, reg::kMcr, 0x1f);
  WriteReg(*ops, 0, reg::kScr, 0x99);
  WriteReg(*ops, 0, reg::kRbrThr, 'r');  // Internal loopback: into RX.
  const uint16_t io = PCI_COMMAND_IO;
  ASSERT_TRUE(ops->RegionWrite(kConfig, PCI_COMMAND, std::as_bytes(std::span(&io, 1))));
  ASSERT_TRUE(ops->Reset());
  EXPECT_EQ(ReadReg(*ops, 0, reg::kIer), 0);
  EXPECT_EQ(ReadReg(*ops, 0, reg::kIirFcr), iir::kNone);
  EXPECT_EQ(ReadReg(*ops, 0, reg::kLcr), 0);
  EXPECT_EQ(ReadReg(*ops, 0, reg::kMcr), 0);
  EXPECT_EQ(ReadReg(*ops, 0, reg::kLsr), lsr::kThre | lsr::kTemt);
  EXPECT_EQ(ReadReg(*ops, 0, reg::kMsr), msr::kCts | msr::kDsr | msr::kDcd);
  EXPECT_EQ(ReadReg(*ops, 0, reg::kScr), 0);
  WriteReg(*ops, 0, reg::kLcr, lcr::kDlab);
  EXPECT_EQ(ReadReg(*ops, 0, reg::kRbrThr), 0);
  EXPECT_EQ(Config32(*ops, PCI_COMMAND) & 0xffff, 0u);
  EXPECT_EQ(*ops->ReadAttribute("far_end"), "loopback") << "reset keeps the far end";
}

TEST_F(MttyDeviceTest, ParentBudgetSharesTwentyFourPorts) {
  const auto types = parent_->types();
  ASSERT_EQ(types.size(), 2u);
  EXPECT_EQ(types[0].pretty_name, "Single port serial");
  EXPECT_EQ(types[1].pretty_name, "Dual port serial");
  EXPECT_EQ(parent_->AvailableInstances(types[0]), 24u);
  EXPECT_EQ(parent_->AvailableInstances(types[1]), 12u);
  std::vector<std::unique_ptr<DeviceOps>> devices;
  for (int i = 0; i < 11; ++i) devices.push_back(Make("2"));
  devices.push_back(Make("1"));
  EXPECT_EQ(parent_->free_ports(), 1u);
  EXPECT_EQ(parent_->AvailableInstances(types[0]), 1u);
  EXPECT_EQ(parent_->AvailableInstances(types[1]), 0u);
  EXPECT_EQ(Errno(Probe(*parent_, "2", dma_)), ENOSPC);
  devices.push_back(Make("1"));
  EXPECT_EQ(Errno(Probe(*parent_, "1", dma_)), ENOSPC);
  devices.erase(devices.begin());  // A dual port card goes away.
  EXPECT_EQ(parent_->AvailableInstances(types[1]), 1u);
  devices.clear();
  EXPECT_EQ(parent_->free_ports(), 24u);
  EXPECT_EQ(Errno(Probe(*parent_, "3", dma_)), EINVAL);
}

TEST_F(MttyDeviceTest, AttributesAndTheirErrors) {
  auto ops = Make();
  const auto attributes = ops->Attributes();
  ASSERT_EQ(attributes.size(), 2u);
  EXPECT_EQ(attributes[0].name, "far_end");
  EXPECT_TRUE(attributes[0].writable);
  EXPECT_EQ(attributes[1].name, "pty");
  EXPECT_FALSE(attributes[1].writable);
  EXPECT_EQ(*ops->ReadAttribute("far_end"), "loopback");
  EXPECT_EQ(*ops->ReadAttribute("pty"), "");
  EXPECT_EQ(Errno(ops->ReadAttribute("baud")), ENOENT);
  EXPECT_EQ(Errno(ops->WriteAttribute("baud", "9600")), ENOENT);
  EXPECT_EQ(Errno(ops->WriteAttribute("pty", "/dev/pts/0")), EACCES);
  EXPECT_EQ(Errno(ops->WriteAttribute("far_end", "modem")), EINVAL);
  EXPECT_EQ(Errno(ops->WriteAttribute("far_end", "socket:relative")), EINVAL);
  EXPECT_EQ(Errno(ops->WriteAttribute("far_end", "socket:")), EINVAL);
  ASSERT_TRUE(ops->WriteAttribute("far_end", "loopback\n"));
  ASSERT_TRUE(ops->Open({}));
  EXPECT_EQ(Errno(ops->WriteAttribute("far_end", "pty")), EBUSY);
  ops->Close();
  ASSERT_TRUE(ops->WriteAttribute("far_end", "pty"));
  EXPECT_EQ(*ops->ReadAttribute("far_end"), "pty");
  EXPECT_TRUE(ops->ReadAttribute("pty")->starts_with("/dev/pts/"));
  ASSERT_TRUE(ops->WriteAttribute("far_end", "loopback"));
  EXPECT_EQ(*ops->ReadAttribute("pty"), "");
}

TEST_F(MttyDeviceTest, DualPortPtyListsBothPaths) {
  auto ops = Make("2");
  ASSERT_TRUE(ops->WriteAttribute("far_end", "pty"));
  const std::string paths = *ops->ReadAttribute("pty");
  const size_t space = paths.find(' ');
  ASSERT_NE(space, std::string::npos);
  EXPECT_TRUE(paths.starts_with("/dev/pts/"));
  EXPECT_NE(paths.substr(0, space), paths.substr(space + 1));
}

// The registry and control plumbing: attributes by UUID.
TEST_F(MttyDeviceTest, RegistryReadsAndWritesAttributesByUuid) {
  Registry registry;
  ASSERT_TRUE(registry.RegisterParent(parent_));
  const Uuid uuid = Uuid::Generate();
  ASSERT_TRUE(registry.CreateMdev("mtty", "mtty-2", uuid));
  EXPECT_EQ(parent_->free_ports(), 22u);
  auto attributes = registry.MdevAttributes(uuid);
  ASSERT_TRUE(attributes.has_value());
  // mtty's two after the core's: five VM attributes, busy_poll_us and the
  // migration view.
  EXPECT_EQ(attributes->size(), 2u + 6u + 3u);
  EXPECT_EQ(*registry.ReadMdevAttribute(uuid, "far_end"), "loopback");
  ASSERT_TRUE(registry.WriteMdevAttribute(uuid, "far_end", "pty\n"));
  EXPECT_EQ(*registry.ReadMdevAttribute(uuid, "far_end"), "pty");
  EXPECT_EQ(Errno(registry.ReadMdevAttribute(uuid, "nope")), ENOENT);
  const Uuid other = Uuid::Generate();
  EXPECT_EQ(Errno(registry.ReadMdevAttribute(other, "far_end")), ENODEV);
  EXPECT_EQ(Errno(registry.WriteMdevAttribute(other, "far_end", "pty")), ENODEV);
  EXPECT_EQ(Errno(registry.MdevAttributes(other)), ENODEV);
  ASSERT_TRUE(registry.RemoveMdev(uuid));
  EXPECT_EQ(parent_->free_ports(), 24u) << "ports return when the device is destroyed";
}

TEST_F(MttyDeviceTest, ControlProtocolAttributeCommands) {
  using Json = nlohmann::json;
  Registry registry;
  ASSERT_TRUE(registry.RegisterParent(parent_));
  const std::string uuid = Uuid::Generate().ToString();
  ASSERT_TRUE(control::HandleRequest(registry, {{"cmd", "start"}, {"parent", "mtty"},
                                                {"type", "mtty-1"}, {"uuid", uuid}})["ok"]
                  .get<bool>());
  const Json list = control::HandleRequest(registry, {{"cmd", "attr-list"}, {"uuid", uuid}});
  // The core's VM attributes and migration view come first.
  ASSERT_EQ(list["attributes"].size(), 2u + 6u + 3u);
  EXPECT_EQ(list["attributes"][10]["name"], "pty");
  EXPECT_EQ(list["attributes"][10]["writable"], false);
  const Json set = control::HandleRequest(
      registry, {{"cmd", "attr-set"}, {"uuid", uuid}, {"name", "far_end"}, {"value", "pty"}});
  EXPECT_TRUE(set["ok"].get<bool>());
  const Json pty =
      control::HandleRequest(registry, {{"cmd", "attr-get"}, {"uuid", uuid}, {"name", "pty"}});
  EXPECT_TRUE(pty["value"].get<std::string>().starts_with("/dev/pts/"));
  const Json bad = control::HandleRequest(
      registry, {{"cmd", "attr-set"}, {"uuid", uuid}, {"name", "far_end"}, {"value", "modem"}});
  EXPECT_EQ(bad["errno"], EINVAL);
}

}  // namespace
}  // namespace umdev::vendor::serial
