// TestParentDriver and TestDevice.
#include "test_parent.h"

#include <algorithm>
#include <cstring>

namespace umdev::testing {

TestDevice::TestDevice(DmaAccess& dma, std::shared_ptr<Counters> counters, bool has_listener,
                       bool pins_pages, std::function<void()> on_remove, Features features)
    : dma_(dma),
      counters_(std::move(counters)),
      has_listener_(has_listener),
      pins_pages_(pins_pages),
      on_remove_(std::move(on_remove)),
      features_(features),
      migration_(
          features.migration_flags,
          [this] {
            MutexLock lock(mu_);
            return config_;
          },
          [this](std::span<const std::byte> state) {
            MutexLock lock(mu_);
            config_.assign(state.begin(), state.end());
            config_.resize(256);
          }) {}

TestDevice::~TestDevice() {
  ++counters_->removed;
  if (on_remove_) on_remove_();
}

Result<void> TestDevice::Open(const OpenContext& context) {
  {
    MutexLock lock(mu_);
    opened_vm_ = context.vm;
  }
  ++counters_->opens;
  return {};
}

std::vector<DeviceAttribute> TestDevice::Attributes() {
  if (!features_.attributes) return {};
  return {DeviceAttribute{.name = "label", .readable = true, .writable = true},
          DeviceAttribute{.name = "serial", .readable = true, .writable = false},
          DeviceAttribute{.name = "secret", .readable = false, .writable = true},
          DeviceAttribute{.name = "vendor/knob", .readable = true, .writable = true}};
}

Result<std::string> TestDevice::ReadAttribute(std::string_view name) {
  if (features_.attributes) {
    MutexLock lock(mu_);
    if (name == "label") return label_;
    if (name == "serial") return std::string("TEST-0001");
    if (name == "vendor/knob") return knob_;
    if (name == "secret") return Fail(EACCES, "secret is write-only");
  }
  return Fail(ENOENT, "no attribute " + std::string(name));
}

Result<void> TestDevice::WriteAttribute(std::string_view name, std::string_view value) {
  if (features_.attributes) {
    MutexLock lock(mu_);
    if (name == "label" && value == "bad") return Fail(EINVAL, "label refuses 'bad'");
    if (name == "label") {
      label_ = value;
      return {};
    }
    if (name == "vendor/knob") {
      knob_ = value;
      return {};
    }
    if (name == "secret") return {};
    if (name == "serial") return Fail(EACCES, "serial is read-only");
  }
  return Fail(ENOENT, "no attribute " + std::string(name));
}

void TestDevice::Close() {
  ++counters_->closes;
  migration_.OnReset();  // Close drops migration sessions (kernel close_device).
  (void)migration_.Stop();
  MutexLock lock(mu_);
  pins_.clear();  // Close releases everything the user set up.
}

Result<RegionInfo> TestDevice::GetRegionInfo(uint32_t index) {
  if (index >= VFIO_PCI_NUM_REGIONS) return Fail(EINVAL, "region index out of range");
  RegionInfo info;
  if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
    info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    info.size = 256;
  }
  return info;
}

Result<size_t> TestDevice::RegionRead(uint32_t index, uint64_t offset, std::span<std::byte> out) {
  MutexLock lock(mu_);
  if (index != VFIO_PCI_CONFIG_REGION_INDEX || offset > config_.size() ||
      out.size() > config_.size() - offset) {
    return Fail(EINVAL, "region read out of range");
  }
  std::memcpy(out.data(), config_.data() + offset, out.size());
  return out.size();
}

Result<size_t> TestDevice::RegionWrite(uint32_t index, uint64_t offset,
                                       std::span<const std::byte> data) {
  MutexLock lock(mu_);
  if (index != VFIO_PCI_CONFIG_REGION_INDEX || offset > config_.size() ||
      data.size() > config_.size() - offset) {
    return Fail(EINVAL, "region write out of range");
  }
  std::memcpy(config_.data() + offset, data.data(), data.size());
  return data.size();
}

Result<IrqInfo> TestDevice::GetIrqInfo(uint32_t index) {
  switch (index) {
    case VFIO_PCI_INTX_IRQ_INDEX:
      return IrqInfo{VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED, 1};
    case VFIO_PCI_REQ_IRQ_INDEX:
      return IrqInfo{VFIO_IRQ_INFO_EVENTFD, 1};
    case VFIO_PCI_MSI_IRQ_INDEX:
    case VFIO_PCI_MSIX_IRQ_INDEX:
    case VFIO_PCI_ERR_IRQ_INDEX:
      return IrqInfo{VFIO_IRQ_INFO_EVENTFD, 0};
    default:
      return Fail(EINVAL, "irq index out of range");
  }
}

Result<void> TestDevice::SetIrqs(IrqSet& set) {
  (void)set;
  return {};
}

Result<void> TestDevice::Reset() {
  ++counters_->resets;
  migration_.OnReset();
  MutexLock lock(mu_);
  std::fill(config_.begin(), config_.end(), std::byte{0});
  return {};
}

void TestDevice::Request(unsigned count) {
  (void)count;
  ++counters_->requests;
  std::shared_ptr<std::function<void()>> fn;
  {
    MutexLock lock(mu_);
    fn = on_request_;
  }
  if (fn != nullptr && *fn) (*fn)();
}

void TestDevice::OnDmaUnmap(uint64_t iova, uint64_t size) {
  ++counters_->unmap_calls;
  if (refuse_unpin_) return;
  std::vector<PinnedPages> dropped;
  {
    MutexLock lock(mu_);
    auto doomed = std::stable_partition(pins_.begin(), pins_.end(), [&](const PinnedPages& p) {
      return !p.Overlaps(iova, size);
    });
    std::move(doomed, pins_.end(), std::back_inserter(dropped));
    pins_.erase(doomed, pins_.end());
  }
  // |dropped| unpins as it goes out of scope, with mu_ released.
}

Result<void> TestDevice::PinAndHold(uint64_t iova, int npage, uint32_t prot) {
  UMDEV_ASSIGN_OR_RETURN(PinnedPages pinned, PinnedPages::Pin(dma_, iova, npage, prot));
  MutexLock lock(mu_);
  pins_.push_back(std::move(pinned));
  return {};
}

size_t TestDevice::held_pins() const {
  MutexLock lock(mu_);
  return pins_.size();
}

void TestDevice::set_on_request(std::function<void()> fn) {
  MutexLock lock(mu_);
  on_request_ = std::make_shared<std::function<void()>>(std::move(fn));
}

TestParentDriver::TestParentDriver(Options options) : options_(std::move(options)) {}

unsigned TestParentDriver::AvailableInstances(const MdevTypeSpec& type) {
  MutexLock lock(mu_);
  const auto used = std::count_if(live_.begin(), live_.end(),
                                  [&](const Live& l) { return l.type == type.sysfs_name; });
  return options_.per_type_capacity - static_cast<unsigned>(used);
}

Result<std::unique_ptr<DeviceOps>> TestParentDriver::Probe(const ProbeContext& context) {
  ++probes_;
  if (const int code = fail_next_probe_.exchange(0); code != 0) {
    return Fail(code, "test probe failure");
  }
  std::function<void()> hook;
  {
    MutexLock lock(mu_);
    hook = probe_hook_;
  }
  if (hook) hook();
  MutexLock lock(mu_);
  if (options_.max_instances == 0) {
    const auto used = std::count_if(live_.begin(), live_.end(), [&](const Live& l) {
      return l.type == context.type.sysfs_name;
    });
    // mtty's rule for drivers without a shared counter: ENOSPC when full.
    if (static_cast<unsigned>(used) >= options_.per_type_capacity) {
      return Fail(ENOSPC, "no capacity left for type " + context.type.sysfs_name);
    }
  }
  const Uuid uuid = context.uuid;
  auto device = std::make_unique<TestDevice>(context.dma, counters_, options_.has_listener,
                                             options_.pins_pages,
                                             [this, uuid] {
                                               MutexLock inner(mu_);
                                               std::erase_if(live_, [&](const Live& l) {
                                                 return l.uuid == uuid;
                                               });
                                             },
                                             options_.features);
  live_.push_back(Live{uuid, context.type.sysfs_name, device.get()});
  return std::unique_ptr<DeviceOps>(std::move(device));
}

void TestParentDriver::set_probe_hook(std::function<void()> hook) {
  MutexLock lock(mu_);
  probe_hook_ = std::move(hook);
}

TestDevice* TestParentDriver::device(const Uuid& uuid) const {
  MutexLock lock(mu_);
  for (const Live& l : live_) {
    if (l.uuid == uuid) return l.device;
  }
  return nullptr;
}

}  // namespace umdev::testing
