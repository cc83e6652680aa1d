// Group, GroupFile and ExternalGroupRef: the IOMMU group of one emulated
// device (kernel: group.c), its open file, and the external-user API.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/mdev_core/container.h"
#include "umdev/mdev_core/device.h"

namespace umdev {

class GroupFile;
class ExternalGroupRef;

// One per mdev, as vfio_register_emulated_iommu_dev() makes; or a real
// IOMMU group of the devices a bus driver registers, which may hold
// several (vfio_register_group_dev). Thread-safe.
//
// container_users_ counts what keeps the group in its container (kernel
// container_users): 1 for the group file's SET_CONTAINER, 1 per open device,
// 1 per external user. At 0 the group leaves the container.
class Group : public std::enable_shared_from_this<Group> {
 public:
  // |iommu_driver|: the backend a container holding this group must use (a
  // real group's IOMMU, as the kernel's type1 attaches the group's domain);
  // null for an emulated group, which takes the container's choice.
  Group(unsigned id, std::shared_ptr<Device> device,
        std::shared_ptr<IommuDriver> iommu_driver = nullptr)
      : id_(id), iommu_driver_(std::move(iommu_driver)), devices_{std::move(device)} {}
  ~Group();

  unsigned id() const { return id_; }
  // The first device: an emulated group's only one.
  std::shared_ptr<Device> device() const UMDEV_EXCLUDES(mu_);
  std::vector<std::shared_ptr<Device>> devices() const UMDEV_EXCLUDES(mu_);
  const std::shared_ptr<IommuDriver>& iommu_driver() const { return iommu_driver_; }
  // Another device of a real group joins it. Errors: EBUSY the group is
  // open or in a container (the kernel allows it; umdev does not move a
  // device under a user); EEXIST a device of that name is in it.
  Result<void> AddDevice(std::shared_ptr<Device> device) UMDEV_EXCLUDES(mu_);
  // Takes an unregistered device out; returns how many are left.
  size_t RemoveDevice(const Device& device) UMDEV_EXCLUDES(mu_);

  // Opens /dev/vfio/<id>. Errors: EBUSY already open, or the device is open
  // through the cdev path; ENODEV the device is being removed.
  Result<std::shared_ptr<GroupFile>> Open() UMDEV_EXCLUDES(mu_);

  bool is_open() const UMDEV_EXCLUDES(mu_);
  std::shared_ptr<Container> container() const UMDEV_EXCLUDES(mu_);
  // The VM recorded by GroupFile::SetVm(), if any.
  std::shared_ptr<const Vm> vm() const UMDEV_EXCLUDES(mu_);

 private:
  friend class GroupFile;
  friend class ExternalGroupRef;
  friend Result<std::unique_ptr<DeviceFile>> OpenDeviceCdev(
      const std::shared_ptr<Group>&, const std::shared_ptr<AddressSpace>&,
      std::shared_ptr<const Vm>);

  void ReleaseUserLocked() UMDEV_REQUIRES(mu_);
  void CloseFile() UMDEV_EXCLUDES(mu_);

  // The device named |name|, or null.
  std::shared_ptr<Device> FindDeviceLocked(std::string_view name) const UMDEV_REQUIRES(mu_);

  const unsigned id_;
  const std::shared_ptr<IommuDriver> iommu_driver_;
  mutable Mutex mu_;
  std::vector<std::shared_ptr<Device>> devices_ UMDEV_GUARDED_BY(mu_);
  bool file_open_ UMDEV_GUARDED_BY(mu_) = false;
  unsigned cdev_opens_ UMDEV_GUARDED_BY(mu_) = 0;
  std::shared_ptr<Container> container_ UMDEV_GUARDED_BY(mu_);
  unsigned container_users_ UMDEV_GUARDED_BY(mu_) = 0;
  // What KVM recorded for this group (kernel group->kvm); the device's first
  // open latches it.
  std::shared_ptr<const Vm> vm_ UMDEV_GUARDED_BY(mu_);
};

// An open group (a /dev/vfio/<id> fd). Device files keep it alive, so it is
// released only after they close. Thread-safe.
class GroupFile : public std::enable_shared_from_this<GroupFile> {
 public:
  explicit GroupFile(std::shared_ptr<Group> group) : group_(std::move(group)) {}
  ~GroupFile();
  GroupFile(const GroupFile&) = delete;
  GroupFile& operator=(const GroupFile&) = delete;

  Group& group() const { return *group_; }

  // VFIO_GROUP_GET_STATUS: VFIO_GROUP_FLAGS_VIABLE | _CONTAINER_SET.
  uint32_t GetStatus() const;
  // VFIO_GROUP_SET_CONTAINER. Errors: EINVAL already in a container or null.
  Result<void> SetContainer(std::shared_ptr<Container> container);
  // VFIO_GROUP_UNSET_CONTAINER. Errors: EINVAL not in a container; EBUSY a
  // device is open or an external user holds the group.
  Result<void> UnsetContainer();
  // kernel vfio_file_set_kvm() on the group file: records the VM (null
  // clears it) for the device's next first open; an open device keeps the
  // VM it latched.
  void SetVm(std::shared_ptr<const Vm> vm);
  std::shared_ptr<const Vm> vm() const;
  // VFIO_GROUP_GET_DEVICE_FD. Errors: EINVAL the container has no IOMMU
  // backend; ENODEV no device of that name; those of opening the device.
  Result<std::unique_ptr<DeviceFile>> GetDeviceFd(std::string_view name);

 private:
  std::shared_ptr<Group> group_;
};

// A holder such as KVM keeping a group in use (kernel external-user API:
// vfio_group_get_external_user / _put_ / vfio_external_user_iommu_id /
// vfio_external_group_match_file). While it lives, the group stays in its
// container, the container keeps its backend, and UNSET_CONTAINER is EBUSY.
// Thread-safe.
class ExternalGroupRef {
 public:
  // Errors: EINVAL the group is not viable, has no container, or the
  // container has no IOMMU backend.
  static Result<ExternalGroupRef> Get(const GroupFile& file);
  ExternalGroupRef(ExternalGroupRef&& other) noexcept = default;
  ExternalGroupRef& operator=(ExternalGroupRef&& other) noexcept;
  ~ExternalGroupRef() { Put(); }

  unsigned iommu_group_id() const { return group_->id(); }
  bool MatchesFile(const GroupFile& file) const { return &file.group() == group_.get(); }
  // The backend the holder may use; kept alive by this reference.
  const std::shared_ptr<Container>& container() const { return container_; }
  void Put();

 private:
  ExternalGroupRef(std::shared_ptr<Group> group, std::shared_ptr<Container> container)
      : group_(std::move(group)), container_(std::move(container)) {}
  std::shared_ptr<Group> group_;
  std::shared_ptr<Container> container_;
};

}  // namespace umdev
