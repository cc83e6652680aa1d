// Device: the core's side of one mdev; DeviceFile: a user's handle on it.
#include "umdev/mdev_core/device.h"

#include <charconv>

#include <spdlog/spdlog.h>

#include <algorithm>

#include "umdev/mdev_core/irq_set.h"

namespace umdev {

Device::~Device() = default;

Result<void> Device::Bind(std::unique_ptr<DeviceOps> ops) {
  if (ops->pins_pages() && ops->dma_unmap_listener() == nullptr) {
    return Fail(EINVAL, "mdev " + name() + " pins pages but has no dma_unmap listener");
  }
  MutexLock lock(mu_);
  vendor_listener_ = ops->dma_unmap_listener();
  ops_ = std::move(ops);
  return {};
}

bool Device::is_open() const {
  MutexLock lock(mu_);
  return open_count_ > 0;
}

bool Device::is_broken() const {
  MutexLock lock(mu_);
  return broken_;
}

void Device::SetNeedsReset(std::string why) {
  MutexLock lock(mu_);
  needs_reset_ = std::move(why);
}

std::string Device::needs_reset() const {
  MutexLock lock(mu_);
  return needs_reset_;
}

bool Device::is_removing() const {
  MutexLock lock(mu_);
  return removing_;
}

void Device::WaitIdleLocked() {
  while (calls_in_flight_ > 0 || transition_) changed_.Wait(mu_);
}

Result<uint64_t> Device::OpenFor(std::shared_ptr<IommuBackend> iommu,
                                 std::shared_ptr<const Vm> vm) {
  DeviceOps* ops = nullptr;
  bool has_listener = false;
  uint64_t generation = 0;
  {
    MutexLock lock(mu_);
    while (transition_) changed_.Wait(mu_);
    if (removing_ || ops_ == nullptr) return Fail(ENODEV, "open " + name() + ": being removed");
    if (open_count_ > 0) {
      // All users of an open device share its DMA target, as all device fds of
      // one group share the group's container.
      if (iommu_ != iommu) return Fail(EBUSY, "open " + name() + ": open in another address space");
      ++open_count_;
      return generation_;
    }
    transition_ = true;
    iommu_ = iommu;
    ops = ops_.get();
    has_listener = vendor_listener_ != nullptr;
    generation = generation_;
  }
  // First open (kernel vfio_df_device_first_open): latch the VM and check
  // the type's rules about it, attach the unmap listener before the vendor
  // can pin, then let the vendor set up.
  Result<void> opened = vm_.Latch(vm, name());
  if (opened.has_value()) {
    opened = has_listener ? iommu->AttachListener(*this) : Result<void>{};
    if (opened.has_value()) {
      opened = ops->Open(OpenContext{.vm = std::move(vm)});
      if (!opened.has_value() && has_listener) iommu->DetachListener(*this);
    }
    if (!opened.has_value()) vm_.Release();
  }
  MutexLock lock(mu_);
  transition_ = false;
  if (opened.has_value()) {
    open_count_ = 1;
  } else {
    iommu_.reset();
  }
  changed_.NotifyAll();
  if (!opened.has_value()) return std::unexpected(Wrap(opened.error(), "open " + name()));
  return generation;
}

void Device::CloseDevice(DeviceOps& ops, const std::shared_ptr<IommuBackend>& iommu,
                         bool has_listener) {
  ops.Close();
  // Detaching releases whatever pins the vendor failed to drop in Close().
  if (has_listener && iommu != nullptr) iommu->DetachListener(*this);
  vm_.Release();  // The last close drops the VM reference (kernel vfio_device_put_kvm).
  MutexLock lock(mu_);
  if (open_count_ == 0) iommu_.reset();
  transition_ = false;
  changed_.NotifyAll();
}

void Device::CloseFor(uint64_t generation) {
  DeviceOps* ops = nullptr;
  std::shared_ptr<IommuBackend> iommu;
  bool has_listener = false;
  {
    MutexLock lock(mu_);
    // A handle revoked by Unregister() was already closed on its behalf.
    if (generation != generation_ || open_count_ == 0) return;
    if (--open_count_ > 0) return;
    while (transition_ || calls_in_flight_ > 0) changed_.Wait(mu_);
    transition_ = true;
    ops = ops_.get();
    iommu = iommu_;
    has_listener = vendor_listener_ != nullptr;
  }
  CloseDevice(*ops, iommu, has_listener);
}

void Device::Unregister(std::chrono::milliseconds bound, std::chrono::milliseconds slice) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + bound;
  MutexLock lock(mu_);
  removing_ = true;
  // Ask users to let go (kernel vfio_unregister_group_dev), within the bound.
  for (unsigned asked = 0; open_count_ > 0 && Clock::now() < deadline; ++asked) {
    // Only this function destroys ops_, so it needs no in-flight count; none is
    // taken because the user may close (and so wait for calls) from Request().
    DeviceOps* ops = ops_.get();
    mu_.Unlock();
    ops->Request(asked);
    mu_.Lock();
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (open_count_ > 0 && left.count() > 0) changed_.WaitFor(mu_, std::min(slice, left));
  }
  WaitIdleLocked();
  if (open_count_ > 0) {
    spdlog::warn("mdev {}: still open after {} ms; revoking the user's access", name(),
                 bound.count());
    ++generation_;  // Stale handles now fail with ENODEV and close as no-ops.
    open_count_ = 0;
    transition_ = true;
    DeviceOps* ops = ops_.get();
    std::shared_ptr<IommuBackend> iommu = iommu_;
    const bool has_listener = vendor_listener_ != nullptr;
    mu_.Unlock();
    CloseDevice(*ops, iommu, has_listener);
    mu_.Lock();
  }
  WaitIdleLocked();
  std::unique_ptr<DeviceOps> doomed = std::move(ops_);
  vendor_listener_ = nullptr;
  mu_.Unlock();
  doomed.reset();  // The vendor's remove, with no lock held.
  mu_.Lock();
}

void Device::AcquireMigrationTurn() {
  MutexLock lock(mu_);
  while (migration_turn_taken_) changed_.Wait(mu_);
  migration_turn_taken_ = true;
}

void Device::ReleaseMigrationTurn() {
  MutexLock lock(mu_);
  migration_turn_taken_ = false;
  changed_.NotifyAll();
}

Result<void> Device::Call(uint64_t generation, const std::function<Result<void>(DeviceOps&)>& fn,
                          bool allow_broken) {
  DeviceOps* ops = nullptr;
  {
    MutexLock lock(mu_);
    if (generation != generation_ || ops_ == nullptr || open_count_ == 0) {
      return Fail(ENODEV, "mdev " + name() + " was removed");
    }
    if (broken_ && !allow_broken) return Fail(EIO, "mdev " + name() + " is broken: reset it");
    ++calls_in_flight_;
    ops = ops_.get();
  }
  Result<void> result = fn(*ops);
  MutexLock lock(mu_);
  --calls_in_flight_;
  changed_.NotifyAll();
  return result;
}

Result<void> Device::CallRegistered(const std::function<Result<void>(DeviceOps&)>& fn) {
  DeviceOps* ops = nullptr;
  {
    MutexLock lock(mu_);
    if (removing_ || ops_ == nullptr) return Fail(ENODEV, "mdev " + name() + " was removed");
    ++calls_in_flight_;
    ops = ops_.get();
  }
  Result<void> result = fn(*ops);
  MutexLock lock(mu_);
  --calls_in_flight_;
  changed_.NotifyAll();
  return result;
}

Result<std::vector<DeviceAttribute>> Device::Attributes() {
  std::vector<DeviceAttribute> attributes;
  for (std::string& name : DeviceVmState::AttributeNames()) {
    const bool writable = name == "bound_vm_uuid";
    attributes.push_back(DeviceAttribute{.name = std::move(name), .readable = true,
                                         .writable = writable});
  }
  attributes.push_back(DeviceAttribute{.name = std::string(kBusyPollAttribute), .readable = true,
                                       .writable = true});
  UMDEV_TRY(CallRegistered([&](DeviceOps& ops) -> Result<void> {
    // The migration view (the kernel's vfio/<dev>/migration debugfs), for
    // devices that migrate.
    if (ops.migration() != nullptr) {
      for (std::string_view name : kMigrationAttributes) {
        attributes.push_back(DeviceAttribute{.name = std::string(name), .readable = true});
      }
    }
    for (DeviceAttribute& attribute : ops.Attributes()) {
      // The core's names win: a vendor cannot shadow them.
      if (!DeviceVmState::IsAttribute(attribute.name) && !IsMigrationAttribute(attribute.name) &&
          attribute.name != kBusyPollAttribute) {
        attributes.push_back(std::move(attribute));
      }
    }
    return {};
  }));
  return attributes;
}

Result<std::string> Device::ReadAttribute(std::string_view name) {
  if (IsMigrationAttribute(name)) return ReadMigrationAttribute(name);
  if (name == kBusyPollAttribute) {
    UMDEV_TRY(CallRegistered([](DeviceOps&) -> Result<void> { return {}; }));
    return std::to_string(busy_poll_us_->load());
  }
  if (DeviceVmState::IsAttribute(name)) {
    UMDEV_TRY(CallRegistered([](DeviceOps&) -> Result<void> { return {}; }));
    return vm_.ReadAttribute(name);
  }
  std::string value;
  UMDEV_TRY(CallRegistered([&](DeviceOps& ops) -> Result<void> {
    UMDEV_ASSIGN_OR_RETURN(value, ops.ReadAttribute(name));
    return {};
  }));
  return value;
}

Result<void> Device::WriteAttribute(std::string_view name, std::string_view value) {
  // sysfs stores get what `echo` wrote, newline included.
  if (value.ends_with('\n')) value.remove_suffix(1);
  if (IsMigrationAttribute(name)) {
    UMDEV_TRY(ReadMigrationAttribute(name));  // ENODEV, ENOENT as a read would.
    return Fail(EACCES, std::string(name) + " is read-only");
  }
  if (DeviceVmState::IsAttribute(name)) {
    UMDEV_TRY(CallRegistered([](DeviceOps&) -> Result<void> { return {}; }));
    return vm_.WriteAttribute(name, value);
  }
  if (name == kBusyPollAttribute) {
    UMDEV_TRY(CallRegistered([](DeviceOps&) -> Result<void> { return {}; }));
    return WriteBusyPoll(value);
  }
  return CallRegistered([&](DeviceOps& ops) { return ops.WriteAttribute(name, value); });
}

Result<void> Device::WriteBusyPoll(std::string_view value) {
  uint32_t us = 0;
  const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), us);
  if (value.empty() || error != std::errc() || end != value.data() + value.size() ||
      us > kMaxBusyPollUs) {
    return Fail(EINVAL, fmt::format("busy_poll_us: '{}' is not a number of microseconds "
                                    "from 0 to {}",
                                    value, kMaxBusyPollUs));
  }
  busy_poll_us_->store(us);
  return {};
}

Result<std::vector<void*>> Device::PinPages(uint64_t iova, int npage, uint32_t prot) {
  std::shared_ptr<IommuBackend> iommu;
  {
    MutexLock lock(mu_);
    // kernel vfio_pin_pages: no dma_unmap op, or not open, is EINVAL.
    if (vendor_listener_ == nullptr) return Fail(EINVAL, "pin: mdev has no dma_unmap listener");
    if (iommu_ == nullptr) return Fail(EINVAL, "pin: mdev " + name() + " is not open");
    iommu = iommu_;
  }
  return iommu->PinPages(*this, iova, npage, prot);
}

void Device::UnpinPages(uint64_t iova, int npage) {
  std::shared_ptr<IommuBackend> iommu;
  {
    MutexLock lock(mu_);
    iommu = iommu_;
  }
  if (iommu != nullptr) iommu->UnpinPages(*this, iova, npage);
}

Result<void> Device::DmaRead(uint64_t iova, std::span<std::byte> out) {
  std::shared_ptr<IommuBackend> iommu;
  {
    MutexLock lock(mu_);
    iommu = iommu_;
  }
  if (iommu == nullptr) return Fail(EINVAL, "dma read: mdev " + name() + " is not open");
  return iommu->DmaRead(iova, out);
}

Result<void> Device::DmaWrite(uint64_t iova, std::span<const std::byte> data) {
  std::shared_ptr<IommuBackend> iommu;
  {
    MutexLock lock(mu_);
    iommu = iommu_;
  }
  if (iommu == nullptr) return Fail(EINVAL, "dma write: mdev " + name() + " is not open");
  return iommu->DmaWrite(iova, data);
}

void Device::OnDmaUnmap(uint64_t iova, uint64_t size) {
  DmaUnmapListener* listener = nullptr;
  {
    MutexLock lock(mu_);
    listener = vendor_listener_;
  }
  // The backend does not return from DetachListener() while this runs, and
  // the vendor object outlives the detach, so |listener| stays valid.
  if (listener != nullptr) listener->OnDmaUnmap(iova, size);
}

void Device::OnPinsRevoked(uint64_t iova, uint64_t size) {
  spdlog::error("mdev {}: kept pins in [{:#x}, {:#x}) after unmap; marked broken until reset",
                name(), iova, iova + size);
  MutexLock lock(mu_);
  broken_ = true;
}

DeviceFile::DeviceFile(std::shared_ptr<Device> device, std::shared_ptr<IommuBackend> iommu,
                       std::shared_ptr<void> keepalive, uint64_t generation,
                       std::function<void()> on_close)
    : device_(std::move(device)),
      iommu_(std::move(iommu)),
      keepalive_(std::move(keepalive)),
      generation_(generation),
      on_close_(std::move(on_close)) {}

DeviceFile::~DeviceFile() {
  device_->CloseFor(generation_);
  if (on_close_) on_close_();
}


Result<DeviceInfo> DeviceFile::GetInfo() {
  return CallFor<DeviceInfo>([](DeviceOps& ops) -> Result<DeviceInfo> { return ops.GetInfo(); });
}

Result<RegionInfo> DeviceFile::GetRegionInfo(uint32_t index) {
  return CallFor<RegionInfo>([&](DeviceOps& ops) { return ops.GetRegionInfo(index); });
}

Result<size_t> DeviceFile::RegionRead(uint32_t index, uint64_t offset, std::span<std::byte> out) {
  return CallFor<size_t>([&](DeviceOps& ops) { return ops.RegionRead(index, offset, out); });
}

Result<size_t> DeviceFile::RegionWrite(uint32_t index, uint64_t offset,
                                       std::span<const std::byte> data) {
  return CallFor<size_t>([&](DeviceOps& ops) { return ops.RegionWrite(index, offset, data); });
}

Result<IrqInfo> DeviceFile::GetIrqInfo(uint32_t index) {
  return CallFor<IrqInfo>([&](DeviceOps& ops) { return ops.GetIrqInfo(index); });
}

Result<void> DeviceFile::SetIrqs(IrqSet& set) {
  return device_->Call(generation_, [&](DeviceOps& ops) -> Result<void> {
    const DeviceInfo device_info = ops.GetInfo();
    if (set.index >= device_info.num_irqs) return Fail(EINVAL, "set irqs: index out of range");
    UMDEV_ASSIGN_OR_RETURN(const IrqInfo info, ops.GetIrqInfo(set.index));
    UMDEV_TRY(ValidateIrqSet(info, set));
    return ops.SetIrqs(set);
  });
}

Result<void> DeviceFile::Reset() {
  {
    // A reset moves a migratable device's state; no transition may straddle it.
    Device::MigrationTurn turn(*device_);
    UMDEV_TRY(device_->Call(
        generation_, [](DeviceOps& ops) { return ops.Reset(); }, /*allow_broken=*/true));
  }
  MutexLock lock(device_->mu_);
  device_->broken_ = false;
  return {};
}

}  // namespace umdev
