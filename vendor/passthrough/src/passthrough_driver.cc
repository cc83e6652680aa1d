// PassthroughDriver: host functions registered with the core; their
// DeviceOps over HostDevice and their groups' IOMMU over HostContainer.
#include "umdev/passthrough/passthrough_driver.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "group_book.h"
#include "umdev/passthrough/container_dirty_log.h"

namespace umdev::passthrough {
namespace {

// One client session's address space: a kernel container of its own. The
// device does its DMA through the host's IOMMU, so nothing here pins pages
// or copies guest memory.
class HostIommuBackend final : public IommuBackend {
 public:
  explicit HostIommuBackend(std::shared_ptr<HostContainer> container)
      : container_(std::move(container)) {}

  IommuInfo info() const override { return IommuInfo{.pgsizes = kPageSize, .max_mappings = 65535}; }
  void SetMessageChannel(DmaMessageChannel*) override {}
  Result<void> Map(DmaMapRequest request) override { return container_->Map(std::move(request)); }
  Result<uint64_t> Unmap(uint64_t iova, uint64_t size) override {
    return container_->Unmap(iova, size);
  }
  Result<uint64_t> UnmapAll() override { return container_->UnmapAll(); }
  size_t mapping_count() const override { return container_->mapping_count(); }
  uint64_t locked_bytes() const override { return container_->mapped_bytes(); }
  Result<void> AttachListener(DmaUnmapListener&) override { return {}; }
  void DetachListener(DmaUnmapListener&) override {}
  Result<std::vector<void*>> PinPages(DmaUnmapListener&, uint64_t, int, uint32_t) override {
    return Fail(ENOTSUP, "a physical device reaches guest memory through the host's IOMMU");
  }
  void UnpinPages(DmaUnmapListener&, uint64_t, int) override {}
  Result<void> DmaRead(uint64_t, std::span<std::byte>) override {
    return Fail(ENOTSUP, "a physical device does its own DMA");
  }
  Result<void> DmaWrite(uint64_t, std::span<const std::byte>) override {
    return Fail(ENOTSUP, "a physical device does its own DMA");
  }
  Result<void> StartDirtyTracking(uint64_t) override { return container_->StartDirtyTracking(); }
  Result<void> StopDirtyTracking() override { return container_->StopDirtyTracking(); }
  Result<std::vector<uint64_t>> ReadAndClearDirty(uint64_t iova, uint64_t size,
                                                  uint64_t pgsize) override {
    return container_->DirtyBitmap(iova, size, pgsize);
  }

 private:
  const std::shared_ptr<HostContainer> container_;
};

// One host function for the core. The kernel hands out the device fd only
// while the group is in a container, which each session makes: the fd is
// opened at the session's first open and closed at its last close, after
// the interrupts are torn down and the function is reset, so nothing of
// one client reaches the next. Thread-safe.
class PassthroughDevice final : public DeviceOps {
 public:
  // |book| counts the open functions of the driver's groups; |iommu| is
  // the group's, whose current container logs DMA; |core| is the core's
  // device, which owns this object and is told when a reset fails.
  PassthroughDevice(VfioKernel& kernel, Device& core, std::shared_ptr<HostGroup> group,
                    std::shared_ptr<HostIommuDriver> iommu, std::string address,
                    std::shared_ptr<GroupBook> book)
      : kernel_(kernel),
        core_(core),
        group_(std::move(group)),
        address_(std::move(address)),
        book_(std::move(book)),
        dirty_log_(std::move(iommu)) {}

  Result<void> Open(const OpenContext&) override {
    return book_->Open(group_->number(), [&]() -> Result<void> {
      UMDEV_ASSIGN_OR_RETURN(std::shared_ptr<HostDevice> device,
                             HostDevice::Open(kernel_, *group_, address_));
      if (const std::string why = core_.needs_reset(); !why.empty()) {
        spdlog::warn("passthrough: {}: a new client gets it without a reset since the last one "
                     "({})",
                     address_, why);
      }
      MutexLock lock(mu_);
      info_ = device->info();
      device_ = std::move(device);
      return {};
    });
  }

  void Close() override {
    std::shared_ptr<HostDevice> device;
    {
      MutexLock lock(mu_);
      device = std::move(device_);
    }
    if (device == nullptr) return;
    dirty_log_.Forget();
    for (uint32_t index = 0; index < device->info().num_irqs; ++index) {
      IrqSet off;
      off.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
      off.index = index;
      (void)device->SetIrqs(off);  // An index the device lacks refuses; nothing to undo.
    }
    // A bus reset would reset the group's other devices too: only once the
    // last of them closes, and only with every other group it reaches idle.
    book_->Close(group_->number(), [&](const GroupBook::ResetScope& scope) {
      const bool last = std::find(scope.held.begin(), scope.held.end(), group_) != scope.held.end();
      if (auto reset = device->Reset(scope.held, last, scope.in_use); !reset.has_value()) {
        spdlog::warn("passthrough: {}: not reset between clients: {}", address_,
                     reset.error().Describe());
        core_.SetNeedsReset(reset.error().Describe());
      } else {
        core_.SetNeedsReset("");
      }
    });
  }

  DeviceInfo GetInfo() override {
    MutexLock lock(mu_);
    return info_;
  }
  Result<RegionInfo> GetRegionInfo(uint32_t index) override {
    UMDEV_ASSIGN_OR_RETURN(auto device, Current());
    return device->Region(index);
  }
  Result<size_t> RegionRead(uint32_t index, uint64_t offset, std::span<std::byte> out) override {
    UMDEV_ASSIGN_OR_RETURN(auto device, Current());
    return device->Read(index, offset, out);
  }
  Result<size_t> RegionWrite(uint32_t index, uint64_t offset,
                             std::span<const std::byte> data) override {
    UMDEV_ASSIGN_OR_RETURN(auto device, Current());
    return device->Write(index, offset, data);
  }
  Result<IrqInfo> GetIrqInfo(uint32_t index) override {
    UMDEV_ASSIGN_OR_RETURN(auto device, Current());
    return device->Irq(index);
  }
  Result<void> SetIrqs(IrqSet& set) override {
    UMDEV_ASSIGN_OR_RETURN(auto device, Current());
    return device->SetIrqs(set);
  }
  Result<void> Reset() override {
    UMDEV_ASSIGN_OR_RETURN(auto device, Current());
    return book_->Reset(group_->number(), [&](const GroupBook::ResetScope& scope) -> Result<void> {
      UMDEV_TRY(device->Reset(scope.held, true, scope.in_use));
      core_.SetNeedsReset("");
      return {};
    });
  }
  DirtyLogOps* dirty_log() override { return &dirty_log_; }

 private:
  Result<std::shared_ptr<HostDevice>> Current() {
    MutexLock lock(mu_);
    if (device_ == nullptr) return Fail(ENODEV, address_ + " is not open");
    return device_;
  }

  VfioKernel& kernel_;
  Device& core_;
  const std::shared_ptr<HostGroup> group_;
  const std::string address_;
  const std::shared_ptr<GroupBook> book_;
  ContainerDirtyLog dirty_log_;
  Mutex mu_;
  std::shared_ptr<HostDevice> device_ UMDEV_GUARDED_BY(mu_);
  // The last open's, so the info outlives the fd (num_regions of vfio-pci).
  DeviceInfo info_ UMDEV_GUARDED_BY(mu_){VFIO_DEVICE_FLAGS_PCI, VFIO_PCI_NUM_REGIONS,
                                         VFIO_PCI_NUM_IRQS};
};

}  // namespace

Result<std::unique_ptr<IommuBackend>> HostIommuDriver::Create(uint32_t type) {
  if (!Supports(type)) return Fail(EINVAL, fmt::format("host IOMMU: no type {}", type));
  UMDEV_ASSIGN_OR_RETURN(std::shared_ptr<HostContainer> container,
                         HostContainer::Create(kernel_, group_, account_));
  {
    MutexLock lock(mu_);
    current_ = container;
  }
  return std::unique_ptr<IommuBackend>(new HostIommuBackend(std::move(container)));
}

std::shared_ptr<HostContainer> HostIommuDriver::Current() const {
  MutexLock lock(mu_);
  return current_.lock();
}

PassthroughDriver::PassthroughDriver(Registry& registry, VfioKernel& kernel, pci::Sysfs sysfs,
                                     std::shared_ptr<pinning::LockedMemoryAccount> account)
    : registry_(registry),
      kernel_(kernel),
      sysfs_(std::move(sysfs)),
      account_(std::move(account)),
      book_(std::make_shared<GroupBook>()) {}

PassthroughDriver::~PassthroughDriver() {
  for (const std::string& address : Devices()) (void)Remove(address);
}

Result<void> PassthroughDriver::Add(const std::string& text) {
  UMDEV_ASSIGN_OR_RETURN(const std::string address, pci::NormalizeAddress(text));
  if (!sysfs_.Exists(address)) return Fail(ENODEV, "no PCI device " + address);
  const std::string driver = sysfs_.DriverOf(address);
  if (driver != "vfio-pci") {
    return Fail(EBUSY, fmt::format("{} is {}; bind it with: {} (or: umdevctl passthrough bind {})",
                                   address,
                                   driver.empty() ? "bound to no driver"
                                                  : "bound to " + driver + ", not vfio-pci",
                                   sysfs_.BindCommands(address, driver), address));
  }
  const std::optional<unsigned> number = sysfs_.IommuGroupOf(address);
  if (!number) {
    return Fail(ENODEV, fmt::format("{} has no IOMMU group: turn the host's IOMMU on "
                                    "(intel_iommu=on or amd_iommu=on)",
                                    address));
  }
  MutexLock lock(mu_);
  if (devices_.contains(address)) return Fail(EEXIST, address + " is served already");
  auto entry = groups_.find(*number);
  if (entry == groups_.end()) {
    // The daemon holds the group from its first device to its last.
    UMDEV_ASSIGN_OR_RETURN(std::shared_ptr<HostGroup> group,
                           HostGroup::Open(kernel_, sysfs_, *number));
    auto iommu = std::make_shared<HostIommuDriver>(kernel_, group, account_);
    book_->Add(group);
    entry = groups_.emplace(*number, GroupEntry{std::move(group), std::move(iommu), 0}).first;
  }
  BusDeviceSpec spec;
  spec.name = address;
  spec.driver = "passthrough";
  spec.iommu_group = *number;
  spec.iommu_driver = entry->second.iommu;
  spec.probe = [this, group = entry->second.group, iommu = entry->second.iommu,
                address](Device& core) -> Result<std::unique_ptr<DeviceOps>> {
    return std::make_unique<PassthroughDevice>(kernel_, core, group, iommu, address, book_);
  };
  if (auto registered = registry_.RegisterDevice(std::move(spec)); !registered.has_value()) {
    if (entry->second.devices == 0) {
      book_->Remove(*number);
      groups_.erase(entry);
    }
    return registered;
  }
  ++entry->second.devices;
  devices_.emplace(address, *number);
  return {};
}

Result<void> PassthroughDriver::Remove(const std::string& text) {
  UMDEV_ASSIGN_OR_RETURN(const std::string address, pci::NormalizeAddress(text));
  {
    MutexLock lock(mu_);
    if (!devices_.contains(address)) return Fail(ENODEV, address + " is not served");
  }
  // Waits for the device's client with no lock of ours held.
  UMDEV_TRY(registry_.UnregisterDevice(address));
  MutexLock lock(mu_);
  const unsigned number = devices_.at(address);
  devices_.erase(address);
  if (--groups_.at(number).devices == 0) {
    book_->Remove(number);
    groups_.erase(number);
  }
  return {};
}

std::vector<std::string> PassthroughDriver::Devices() const {
  MutexLock lock(mu_);
  std::vector<std::string> addresses;
  for (const auto& [address, group] : devices_) addresses.push_back(address);
  return addresses;
}

}  // namespace umdev::passthrough
