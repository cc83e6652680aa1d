// Registry: parent registration and instance lifecycle with mdev_core.c rules.
#include "umdev/mdev_core/registry.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

namespace umdev {

struct Registry::Parent {
  std::shared_ptr<ParentDriver> driver;
  std::string name;
  std::string driver_name;
  std::string device_api;
  std::vector<MdevTypeSpec> types;
  std::vector<std::string> type_ids;  // "<driver>-<sysfs_name>", parallel to |types|.
  std::vector<std::string> attributes;  // The driver's AttributeNames().
  unsigned max_instances = 0;         // 0: the driver's AvailableInstances() decides.
  unsigned available = 0;             // The shared counter, when max_instances > 0.
  unsigned creating = 0;              // Probes in progress.
  // Which VM holds which open instance, for types with VmPolicy::one_per_vm.
  std::shared_ptr<VmClaims> vm_claims = std::make_shared<VmClaims>();
  bool unregistering = false;
};

struct Registry::Mdev {
  enum class State { kCreating, kActive, kRemoving };
  Uuid uuid;
  std::shared_ptr<Parent> parent;
  size_t type_index = 0;
  unsigned group_id = 0;
  State state = State::kCreating;
  std::shared_ptr<Device> device;
  std::shared_ptr<Group> group;
};

struct Registry::BusDevice {
  std::string name;
  std::string driver;
  unsigned group_id = 0;
  bool removing = false;
  std::shared_ptr<Device> device;
  std::shared_ptr<Group> group;
};

Registry::Registry(RegistryOptions options) : options_(options) {}

Registry::~Registry() {
  std::vector<std::string> names;
  std::vector<std::string> devices;
  {
    MutexLock lock(mu_);
    for (const auto& [name, parent] : parents_) names.push_back(name);
    for (const auto& [name, device] : bus_devices_) devices.push_back(name);
  }
  for (const auto& name : names) (void)UnregisterParent(name);
  for (const auto& name : devices) (void)UnregisterDevice(name);
}

template <typename F>
void Registry::Notify(F&& f) {
  std::vector<RegistryObserver*> observers;
  {
    MutexLock lock(mu_);
    observers = observers_;
  }
  for (RegistryObserver* observer : observers) f(*observer);
}

template <typename Prepare, typename Abandon>
Result<void> Registry::PrepareObservers(Prepare prepare, Abandon abandon) {
  std::vector<RegistryObserver*> observers;
  {
    MutexLock lock(mu_);
    observers = observers_;
  }
  for (size_t i = 0; i < observers.size(); ++i) {
    if (auto prepared = prepare(*observers[i]); !prepared.has_value()) {
      for (size_t j = 0; j < i; ++j) abandon(*observers[j]);
      return prepared;
    }
  }
  return {};
}

void Registry::AddObserver(RegistryObserver* observer) {
  MutexLock lock(mu_);
  observers_.push_back(observer);
}

void Registry::RemoveObserver(RegistryObserver* observer) {
  MutexLock lock(mu_);
  std::erase(observers_, observer);
}

std::shared_ptr<Registry::Parent> Registry::FindParentLocked(std::string_view name) const {
  auto it = parents_.find(name);
  return it == parents_.end() ? nullptr : it->second;
}

MdevStatus Registry::StatusLocked(const Mdev& mdev) const {
  std::optional<VmIdentity> vm;
  if (mdev.device != nullptr) {
    if (auto latched = mdev.device->vm(); latched != nullptr) vm = latched->identity();
  }
  return MdevStatus{
      .uuid = mdev.uuid,
      .parent = mdev.parent->name,
      .type_id = mdev.parent->type_ids[mdev.type_index],
      .iommu_group = mdev.group_id,
      .open = mdev.device != nullptr && mdev.device->is_open(),
      .broken = mdev.device != nullptr && mdev.device->is_broken(),
      .vm = std::move(vm),
  };
}

unsigned Registry::AllocateGroupIdLocked() {
  // The smallest free id, as the kernel's IOMMU group ida hands out; real
  // groups keep the numbers the host gave them.
  std::set<unsigned> used;
  for (const auto& [uuid, mdev] : mdevs_) used.insert(mdev->group_id);
  for (const auto& [name, device] : bus_devices_) used.insert(device->group_id);
  unsigned id = 0;
  while (used.contains(id)) ++id;
  return id;
}

Result<void> Registry::RegisterParent(std::shared_ptr<ParentDriver> driver) {
  if (driver == nullptr) return Fail(EINVAL, "register parent: null driver");
  auto parent = std::make_shared<Parent>();
  parent->driver = driver;
  parent->name = driver->parent_name();
  parent->device_api = driver->device_api();
  parent->types = driver->types();
  parent->attributes = driver->AttributeNames();
  parent->max_instances = driver->max_instances();
  parent->available = parent->max_instances;
  const std::string prefix = driver->driver_name();
  parent->driver_name = prefix;
  if (parent->name.empty() || prefix.empty() || parent->device_api.empty()) {
    return Fail(EINVAL, "register parent: empty name, driver name or device_api");
  }
  if (parent->types.empty()) return Fail(EINVAL, "register parent " + parent->name + ": no types");
  for (const auto& type : parent->types) {
    std::string id = prefix + "-" + type.sysfs_name;
    if (type.sysfs_name.empty() ||
        std::find(parent->type_ids.begin(), parent->type_ids.end(), id) != parent->type_ids.end()) {
      return Fail(EINVAL, "register parent " + parent->name + ": bad or duplicate type '" + id + "'");
    }
    parent->type_ids.push_back(std::move(id));
  }
  {
    MutexLock lock(mu_);
    if (parents_.contains(parent->name)) {
      return Fail(EEXIST, "parent '" + parent->name + "' is already registered");
    }
    parents_.emplace(parent->name, parent);
  }
  spdlog::info("MDEV: registered parent {}", parent->name);
  Notify([&](RegistryObserver& o) { o.OnParentRegistered(parent->name); });
  return {};
}

Result<void> Registry::UnregisterParent(std::string_view name) {
  std::vector<std::shared_ptr<Mdev>> doomed;
  std::shared_ptr<Parent> parent;
  {
    MutexLock lock(mu_);
    parent = FindParentLocked(name);
    if (parent == nullptr || parent->unregistering) {
      return Fail(ENODEV, fmt::format("no parent '{}'", name));
    }
    parent->unregistering = true;  // kernel: down_write(unreg_sem).
    while (parent->creating > 0) changed_.Wait(mu_);
    for (auto& [uuid, mdev] : mdevs_) {
      if (mdev->parent == parent && mdev->state == Mdev::State::kActive) {
        mdev->state = Mdev::State::kRemoving;
        doomed.push_back(mdev);
      }
    }
  }
  for (const auto& mdev : doomed) Teardown(mdev);
  {
    MutexLock lock(mu_);
    // Removals that were already under way finish on their own threads.
    const auto has_instances = [&] {
      return std::any_of(mdevs_.begin(), mdevs_.end(),
                         [&](const auto& entry) { return entry.second->parent == parent; });
    };
    while (has_instances()) changed_.Wait(mu_);
    parents_.erase(parent->name);
  }
  spdlog::info("MDEV: unregistered parent {}", parent->name);
  Notify([&](RegistryObserver& o) { o.OnParentUnregistered(parent->name); });
  return {};
}

Result<void> Registry::CreateMdev(std::string_view parent_name, std::string_view type_id,
                                  const Uuid& uuid) {
  std::shared_ptr<Parent> parent;
  std::shared_ptr<Mdev> mdev;
  {
    MutexLock lock(mu_);
    parent = FindParentLocked(parent_name);
    if (parent == nullptr || parent->unregistering) {
      return Fail(ENODEV, fmt::format("no parent '{}'", parent_name));
    }
    auto type = std::find(parent->type_ids.begin(), parent->type_ids.end(), type_id);
    if (type == parent->type_ids.end()) {
      return Fail(ENODEV, fmt::format("parent '{}' has no type '{}'", parent_name, type_id));
    }
    if (mdevs_.contains(uuid)) return Fail(EEXIST, "mdev " + uuid.ToString() + " already exists");
    if (parent->max_instances > 0) {
      if (parent->available == 0) {
        return Fail(EUSERS, fmt::format("parent '{}' has no instance left", parent_name));
      }
      --parent->available;
    }
    mdev = std::make_shared<Mdev>();
    mdev->uuid = uuid;
    mdev->parent = parent;
    mdev->type_index = static_cast<size_t>(type - parent->type_ids.begin());
    mdev->group_id = AllocateGroupIdLocked();
    mdevs_.emplace(uuid, mdev);
    ++parent->creating;
  }
  const MdevTypeSpec& type_spec = parent->types[mdev->type_index];
  auto device = std::make_shared<Device>(uuid, type_spec.vm_policy, parent->vm_claims);
  Result<std::unique_ptr<DeviceOps>> ops =
      parent->driver->Probe(ProbeContext{type_spec, uuid, *device});
  if (ops.has_value() && *ops == nullptr) ops = Fail(EINVAL, "probe returned no device");
  // Binding checks the vendor's contract; a refused device is destroyed here,
  // with no lock held, like a failed probe.
  Result<void> bound = ops.has_value() ? device->Bind(std::move(*ops))
                                       : Result<void>(std::unexpected(ops.error()));
  if (bound.has_value()) {
    bound = PrepareObservers([&](RegistryObserver& o) { return o.PrepareMdev(uuid); },
                             [&](RegistryObserver& o) { o.AbandonMdev(uuid); });
  }
  MdevStatus status;
  {
    MutexLock lock(mu_);
    --parent->creating;
    changed_.NotifyAll();
    if (!bound.has_value()) {
      mdevs_.erase(uuid);
      if (parent->max_instances > 0) ++parent->available;
      return std::unexpected(Wrap(bound.error(), "probe mdev " + uuid.ToString()));
    }
    mdev->device = device;
    mdev->group = std::make_shared<Group>(mdev->group_id, device);
    mdev->state = Mdev::State::kActive;
    status = StatusLocked(*mdev);
  }
  spdlog::info("MDEV: created {} ({} on {}), IOMMU group {}", status.uuid.ToString(),
               status.type_id, status.parent, status.iommu_group);
  Notify([&](RegistryObserver& o) { o.OnMdevCreated(status); });
  return {};
}

Result<void> Registry::RemoveMdev(const Uuid& uuid) {
  std::shared_ptr<Mdev> mdev;
  {
    MutexLock lock(mu_);
    auto it = mdevs_.find(uuid);
    if (it == mdevs_.end()) return Fail(ENODEV, "no mdev " + uuid.ToString());
    mdev = it->second;
    // kernel: down_read_trylock(unreg_sem) fails while the parent goes away.
    if (mdev->parent->unregistering) {
      return Fail(ENODEV, "mdev " + uuid.ToString() + ": its parent is going away");
    }
    if (mdev->state != Mdev::State::kActive) {
      return Fail(EAGAIN, "mdev " + uuid.ToString() + " is already being removed");
    }
    mdev->state = Mdev::State::kRemoving;
  }
  Teardown(mdev);
  return {};
}

void Registry::Teardown(const std::shared_ptr<Mdev>& mdev) {
  MdevStatus status;
  {
    MutexLock lock(mu_);
    status = StatusLocked(*mdev);
  }
  // Waits for the user (bounded) and destroys the vendor object; no lock held.
  mdev->device->Unregister(options_.removal_bound, options_.request_interval);
  {
    MutexLock lock(mu_);
    mdevs_.erase(mdev->uuid);
    if (mdev->parent->max_instances > 0) ++mdev->parent->available;
    changed_.NotifyAll();
  }
  status.open = false;
  spdlog::info("MDEV: removed {}", status.uuid.ToString());
  Notify([&](RegistryObserver& o) { o.OnMdevRemoved(status); });
}

std::vector<ParentStatus> Registry::Parents() const {
  std::vector<std::shared_ptr<Parent>> parents;
  std::vector<ParentStatus> result;
  {
    MutexLock lock(mu_);
    for (const auto& [name, parent] : parents_) {
      if (parent->unregistering) continue;
      ParentStatus status{
          .name = name, .driver = parent->driver_name, .attributes = parent->attributes, .types = {}};
      for (size_t i = 0; i < parent->types.size(); ++i) {
        const MdevTypeSpec& spec = parent->types[i];
        MdevTypeStatus type{
            .id = parent->type_ids[i],
            .name = spec.pretty_name.empty() ? spec.sysfs_name : spec.pretty_name,
            .description = spec.description,
            .device_api = parent->device_api,
            .available_instances = parent->available,
            .devices = {},
        };
        for (const auto& [uuid, mdev] : mdevs_) {
          if (mdev->parent == parent && mdev->type_index == i &&
              mdev->state == Mdev::State::kActive) {
            type.devices.push_back(uuid);
          }
        }
        status.types.push_back(std::move(type));
      }
      parents.push_back(parent);
      result.push_back(std::move(status));
    }
  }
  // get_available() is a vendor call: made with no lock held.
  for (size_t p = 0; p < parents.size(); ++p) {
    if (parents[p]->max_instances > 0) continue;
    for (size_t t = 0; t < parents[p]->types.size(); ++t) {
      result[p].types[t].available_instances =
          parents[p]->driver->AvailableInstances(parents[p]->types[t]);
    }
  }
  return result;
}

std::vector<MdevStatus> Registry::Mdevs() const {
  MutexLock lock(mu_);
  std::vector<MdevStatus> result;
  for (const auto& [uuid, mdev] : mdevs_) {
    if (mdev->state == Mdev::State::kActive) result.push_back(StatusLocked(*mdev));
  }
  return result;
}

Result<MdevStatus> Registry::FindMdev(const Uuid& uuid) const {
  MutexLock lock(mu_);
  auto it = mdevs_.find(uuid);
  if (it == mdevs_.end() || it->second->state != Mdev::State::kActive) {
    return Fail(ENODEV, "no mdev " + uuid.ToString());
  }
  return StatusLocked(*it->second);
}

Result<std::shared_ptr<Group>> Registry::FindGroup(unsigned group_id) const {
  MutexLock lock(mu_);
  if (auto real = real_groups_.find(group_id); real != real_groups_.end()) return real->second;
  for (const auto& [uuid, mdev] : mdevs_) {
    if (mdev->group_id == group_id && mdev->state == Mdev::State::kActive) return mdev->group;
  }
  return Fail(ENODEV, fmt::format("no IOMMU group {}", group_id));
}

Result<std::shared_ptr<Group>> Registry::FindGroupOf(const Uuid& uuid) const {
  MutexLock lock(mu_);
  auto it = mdevs_.find(uuid);
  if (it == mdevs_.end() || it->second->state != Mdev::State::kActive) {
    return Fail(ENODEV, "no mdev " + uuid.ToString());
  }
  return it->second->group;
}

BusDeviceStatus Registry::StatusLocked(const BusDevice& device) const {
  std::optional<VmIdentity> vm;
  if (auto latched = device.device->vm(); latched != nullptr) vm = latched->identity();
  return BusDeviceStatus{.name = device.name,
                         .driver = device.driver,
                         .iommu_group = device.group_id,
                         .open = device.device->is_open(),
                         .vm = std::move(vm),
                         .needs_reset = device.device->needs_reset()};
}

Result<void> Registry::RegisterDevice(BusDeviceSpec spec) {
  if (spec.name.empty() || spec.name.size() > 64 || spec.name.find('/') != std::string::npos ||
      spec.name == "." || spec.name == ".." || spec.driver.empty() || !spec.probe) {
    return Fail(EINVAL, fmt::format("register device '{}' of driver '{}': a name (1 .. 64 bytes, "
                                    "no '/'), a driver and a probe",
                                    spec.name, spec.driver));
  }
  auto entry = std::make_shared<BusDevice>();
  entry->name = spec.name;
  entry->driver = spec.driver;
  entry->group_id = spec.iommu_group;
  entry->removing = true;  // Not visible until it is in its group.
  {
    MutexLock lock(mu_);
    const auto uuid = Uuid::Parse(spec.name);
    if (bus_devices_.contains(spec.name) || (uuid.has_value() && mdevs_.contains(*uuid))) {
      return Fail(EEXIST, "device " + spec.name + " already exists");
    }
    for (const auto& [id, mdev] : mdevs_) {
      if (mdev->group_id == spec.iommu_group) {
        return Fail(EBUSY, fmt::format("IOMMU group {} is mdev {}'s", spec.iommu_group,
                                       id.ToString()));
      }
    }
    bus_devices_.emplace(spec.name, entry);
  }
  auto device = std::make_shared<Device>(spec.name);
  Result<std::unique_ptr<DeviceOps>> ops = spec.probe(*device);
  if (ops.has_value() && *ops == nullptr) ops = Fail(EINVAL, "probe returned no device");
  Result<void> ready = ops.has_value() ? device->Bind(std::move(*ops))
                                       : Result<void>(std::unexpected(ops.error()));
  if (ready.has_value()) {
    ready = PrepareObservers([&](RegistryObserver& o) { return o.PrepareDevice(spec.name); },
                             [&](RegistryObserver& o) { o.AbandonDevice(spec.name); });
  }
  const bool prepared = ready.has_value();
  BusDeviceStatus status;
  {
    MutexLock lock(mu_);
    if (ready.has_value()) {
      auto group = real_groups_.find(spec.iommu_group);
      if (group == real_groups_.end()) {
        real_groups_.emplace(spec.iommu_group,
                             std::make_shared<Group>(spec.iommu_group, device, spec.iommu_driver));
      } else {
        ready = group->second->AddDevice(device);
      }
    }
    if (!ready.has_value()) {
      bus_devices_.erase(spec.name);
    } else {
      entry->device = device;
      entry->group = real_groups_.at(spec.iommu_group);
      entry->removing = false;
      status = StatusLocked(*entry);
    }
  }
  if (!ready.has_value()) {
    // Refused after every observer prepared (the group would not take it):
    // they undo it. The vendor object goes with the device, no lock held.
    if (prepared) Notify([&](RegistryObserver& o) { o.AbandonDevice(spec.name); });
    device->Unregister(std::chrono::milliseconds(0), std::chrono::milliseconds(0));
    return std::unexpected(Wrap(ready.error(), "register device " + spec.name));
  }
  spdlog::info("VFIO: registered {} ({}), IOMMU group {}", status.name, status.driver,
               status.iommu_group);
  Notify([&](RegistryObserver& o) { o.OnDeviceRegistered(status); });
  return {};
}

Result<void> Registry::UnregisterDevice(std::string_view name) {
  std::shared_ptr<BusDevice> entry;
  BusDeviceStatus status;
  {
    MutexLock lock(mu_);
    auto it = bus_devices_.find(name);
    if (it == bus_devices_.end()) return Fail(ENODEV, fmt::format("no device '{}'", name));
    entry = it->second;
    if (entry->removing) return Fail(EAGAIN, fmt::format("device '{}' is already going", name));
    entry->removing = true;
    status = StatusLocked(*entry);
  }
  // Waits for the user (bounded) and destroys the vendor object; no lock held.
  entry->device->Unregister(options_.removal_bound, options_.request_interval);
  {
    MutexLock lock(mu_);
    if (entry->group->RemoveDevice(*entry->device) == 0) real_groups_.erase(entry->group_id);
    bus_devices_.erase(entry->name);
    changed_.NotifyAll();
  }
  status.open = false;
  spdlog::info("VFIO: unregistered {}", status.name);
  Notify([&](RegistryObserver& o) { o.OnDeviceUnregistered(status); });
  return {};
}

std::vector<BusDeviceStatus> Registry::BusDevices() const {
  MutexLock lock(mu_);
  std::vector<BusDeviceStatus> result;
  for (const auto& [name, device] : bus_devices_) {
    if (!device->removing) result.push_back(StatusLocked(*device));
  }
  return result;
}

Result<std::shared_ptr<Group>> Registry::FindGroupOfDevice(std::string_view name) const {
  {
    MutexLock lock(mu_);
    auto it = bus_devices_.find(name);
    if (it != bus_devices_.end() && !it->second->removing) return it->second->group;
  }
  const auto uuid = Uuid::Parse(name);
  if (!uuid.has_value()) return Fail(ENODEV, fmt::format("no device '{}'", name));
  return FindGroupOf(*uuid);
}

Result<std::shared_ptr<Device>> Registry::FindDevice(const Uuid& uuid) const {
  MutexLock lock(mu_);
  auto it = mdevs_.find(uuid);
  if (it == mdevs_.end() || it->second->state != Mdev::State::kActive) {
    return Fail(ENODEV, "no mdev " + uuid.ToString());
  }
  return it->second->device;
}

// Attribute calls reach the vendor with no registry lock held; the Device
// keeps the vendor object alive for the call or refuses with ENODEV.
Result<std::string> Registry::ReadParentAttribute(std::string_view parent_name,
                                                  std::string_view name) const {
  std::shared_ptr<ParentDriver> driver;
  {
    MutexLock lock(mu_);
    const std::shared_ptr<Parent> parent = FindParentLocked(parent_name);
    if (parent == nullptr || parent->unregistering) {
      return Fail(ENODEV, fmt::format("no parent '{}'", parent_name));
    }
    driver = parent->driver;
  }
  return driver->ReadAttribute(name);
}

Result<Device::Usage> Registry::MdevUsage(const Uuid& uuid) const {
  UMDEV_ASSIGN_OR_RETURN(const std::shared_ptr<Device> device, FindDevice(uuid));
  return device->CurrentUsage();
}

Result<std::vector<DeviceAttribute>> Registry::MdevAttributes(const Uuid& uuid) const {
  UMDEV_ASSIGN_OR_RETURN(const std::shared_ptr<Device> device, FindDevice(uuid));
  return device->Attributes();
}

Result<std::string> Registry::ReadMdevAttribute(const Uuid& uuid, std::string_view name) const {
  UMDEV_ASSIGN_OR_RETURN(const std::shared_ptr<Device> device, FindDevice(uuid));
  return device->ReadAttribute(name);
}

Result<void> Registry::WriteMdevAttribute(const Uuid& uuid, std::string_view name,
                                          std::string_view value) {
  UMDEV_ASSIGN_OR_RETURN(const std::shared_ptr<Device> device, FindDevice(uuid));
  return device->WriteAttribute(name, value);
}

}  // namespace umdev
