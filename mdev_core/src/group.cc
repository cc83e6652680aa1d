// Group, GroupFile and the external-user API.
#include "umdev/mdev_core/group.h"

#include <fmt/format.h>
#include <linux/vfio.h>

#include <utility>

namespace umdev {

Group::~Group() {
  MutexLock lock(mu_);
  if (container_ != nullptr) container_->DetachGroup(this);
}

Result<std::shared_ptr<GroupFile>> Group::Open() {
  MutexLock lock(mu_);
  if (file_open_) return Fail(EBUSY, fmt::format("group {} is already open", id_));
  if (cdev_opens_ > 0) return Fail(EBUSY, fmt::format("group {}: device open through cdev", id_));
  if (devices_.empty() || devices_.front()->is_removing()) {
    return Fail(ENODEV, fmt::format("group {} is being removed", id_));
  }
  file_open_ = true;
  return std::make_shared<GroupFile>(shared_from_this());
}

std::shared_ptr<Device> Group::device() const {
  MutexLock lock(mu_);
  return devices_.empty() ? nullptr : devices_.front();
}

std::vector<std::shared_ptr<Device>> Group::devices() const {
  MutexLock lock(mu_);
  return devices_;
}

std::shared_ptr<Device> Group::FindDeviceLocked(std::string_view name) const {
  for (const auto& device : devices_) {
    if (device->name() == name) return device;
  }
  return nullptr;
}

Result<void> Group::AddDevice(std::shared_ptr<Device> device) {
  MutexLock lock(mu_);
  if (file_open_ || cdev_opens_ > 0 || container_ != nullptr) {
    return Fail(EBUSY, fmt::format("group {} is in use: {} joins it once it is closed", id_,
                                   device->name()));
  }
  if (FindDeviceLocked(device->name()) != nullptr) {
    return Fail(EEXIST, fmt::format("group {} already holds {}", id_, device->name()));
  }
  devices_.push_back(std::move(device));
  return {};
}

size_t Group::RemoveDevice(const Device& device) {
  MutexLock lock(mu_);
  std::erase_if(devices_, [&](const auto& held) { return held.get() == &device; });
  return devices_.size();
}

bool Group::is_open() const {
  MutexLock lock(mu_);
  return file_open_;
}

std::shared_ptr<const Vm> Group::vm() const {
  MutexLock lock(mu_);
  return vm_;
}

std::shared_ptr<Container> Group::container() const {
  MutexLock lock(mu_);
  return container_;
}

void Group::ReleaseUserLocked() {
  if (container_users_ == 0 || --container_users_ > 0) return;
  // The last user is gone (kernel vfio_group_detach_container).
  container_->DetachGroup(this);
  container_.reset();
}

void Group::CloseFile() {
  MutexLock lock(mu_);
  file_open_ = false;
  // The file's own container user, taken by SET_CONTAINER and not given back
  // by UNSET_CONTAINER.
  if (container_ != nullptr) ReleaseUserLocked();
}

GroupFile::~GroupFile() { group_->CloseFile(); }

uint32_t GroupFile::GetStatus() const {
  // An emulated group holds one device, bound by construction: always viable.
  uint32_t flags = VFIO_GROUP_FLAGS_VIABLE;
  if (group_->container() != nullptr) flags |= VFIO_GROUP_FLAGS_CONTAINER_SET;
  return flags;
}

Result<void> GroupFile::SetContainer(std::shared_ptr<Container> container) {
  if (container == nullptr) return Fail(EINVAL, "set container: no container");
  Group& group = *group_;
  MutexLock lock(group.mu_);
  if (group.container_ != nullptr) {
    return Fail(EINVAL, fmt::format("group {} is already in a container", group.id_));
  }
  container->AttachGroup(&group);
  group.container_ = std::move(container);
  group.container_users_ = 1;
  return {};
}

Result<void> GroupFile::UnsetContainer() {
  Group& group = *group_;
  MutexLock lock(group.mu_);
  if (group.container_ == nullptr) {
    return Fail(EINVAL, fmt::format("group {} is not in a container", group.id_));
  }
  if (group.container_users_ != 1) {
    return Fail(EBUSY, fmt::format("group {} is in use by a device or an external user", group.id_));
  }
  group.ReleaseUserLocked();
  return {};
}

Result<std::unique_ptr<DeviceFile>> GroupFile::GetDeviceFd(std::string_view name) {
  Group& group = *group_;
  std::shared_ptr<IommuBackend> iommu;
  std::shared_ptr<Device> device;
  {
    MutexLock lock(group.mu_);
    iommu = group.container_ != nullptr ? group.container_->iommu() : nullptr;
    if (iommu == nullptr) {
      return Fail(EINVAL, fmt::format("group {}: the container has no IOMMU backend", group.id_));
    }
    device = group.FindDeviceLocked(name);
    if (device == nullptr) {
      return Fail(ENODEV, fmt::format("group {} has no device '{}'", group.id_, name));
    }
    ++group.container_users_;
  }
  auto generation = device->OpenFor(iommu, group_->vm());
  if (!generation.has_value()) {
    MutexLock lock(group.mu_);
    group.ReleaseUserLocked();
    return std::unexpected(generation.error());
  }
  std::shared_ptr<Group> owner = group_;
  return std::unique_ptr<DeviceFile>(new DeviceFile(std::move(device), std::move(iommu),
                                                    shared_from_this(), *generation, [owner] {
                                                      MutexLock lock(owner->mu_);
                                                      owner->ReleaseUserLocked();
                                                    }));
}

void GroupFile::SetVm(std::shared_ptr<const Vm> vm) {
  std::shared_ptr<const Vm> previous;
  MutexLock lock(group_->mu_);
  previous = std::exchange(group_->vm_, std::move(vm));
}

std::shared_ptr<const Vm> GroupFile::vm() const { return group_->vm(); }

Result<ExternalGroupRef> ExternalGroupRef::Get(const GroupFile& file) {
  Group& group = file.group();
  MutexLock lock(group.mu_);
  // kernel vfio_group_get_external_user: the group must be viable (always, for
  // an emulated group) and its container must have an IOMMU backend.
  if (group.container_ == nullptr || group.container_->iommu() == nullptr) {
    return Fail(EINVAL, fmt::format("group {}: no container with an IOMMU backend", group.id_));
  }
  ++group.container_users_;
  return ExternalGroupRef(group.shared_from_this(), group.container_);
}

ExternalGroupRef& ExternalGroupRef::operator=(ExternalGroupRef&& other) noexcept {
  if (this != &other) {
    Put();
    group_ = std::move(other.group_);
    container_ = std::move(other.container_);
  }
  return *this;
}

void ExternalGroupRef::Put() {
  if (group_ == nullptr) return;
  {
    MutexLock lock(group_->mu_);
    group_->ReleaseUserLocked();
  }
  group_.reset();
  container_.reset();
}

Result<std::unique_ptr<DeviceFile>> OpenDeviceCdev(const std::shared_ptr<Group>& group,
                                                   const std::shared_ptr<AddressSpace>& space,
                                                   std::shared_ptr<const Vm> vm) {
  std::shared_ptr<Device> device;
  {
    MutexLock lock(group->mu_);
    // kernel vfio_device_block_group: the two paths exclude each other.
    if (group->file_open_) {
      return Fail(EBUSY, fmt::format("group {} is open through the group path", group->id_));
    }
    // Only emulated groups are reached this way here: each holds one device.
    if (group->devices_.size() != 1) {
      return Fail(EINVAL, fmt::format("group {} holds {} devices: open them through the group",
                                      group->id_, group->devices_.size()));
    }
    device = group->devices_.front();
    ++group->cdev_opens_;
  }
  auto generation = device->OpenFor(space->iommu(), std::move(vm));
  if (!generation.has_value()) {
    MutexLock lock(group->mu_);
    --group->cdev_opens_;
    return std::unexpected(generation.error());
  }
  return std::unique_ptr<DeviceFile>(new DeviceFile(std::move(device), space->iommu(), space,
                                                    *generation, [group] {
                                                      MutexLock lock(group->mu_);
                                                      --group->cdev_opens_;
                                                    }));
}

}  // namespace umdev
