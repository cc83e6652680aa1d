// Registry: parents, their mdev types and instances (kernel mdev_core.c), and
// the IOMMU backend kinds. The one source of truth the CLI and sysfs read.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/common/uuid.h"
#include "umdev/mdev_core/group.h"
#include "umdev/mdev_core/iommu_drivers.h"
#include "umdev/mdev_core/parent_driver.h"

namespace umdev {

struct RegistryOptions {
  // How long removal of an open device waits for its user to release it
  // before revoking the user's access (the kernel waits forever).
  std::chrono::milliseconds removal_bound{10000};
  // How often the user is asked again (kernel: every 10 s).
  std::chrono::milliseconds request_interval{1000};
};

struct MdevTypeStatus {
  std::string id;  // "<driver>-<sysfs_name>", the sysfs directory name.
  std::string name;
  std::string description;
  std::string device_api;
  unsigned available_instances = 0;
  std::vector<Uuid> devices;
};

struct ParentStatus {
  std::string name;
  std::string driver;  // The vendor's driver_name() (kernel dev_driver_string()).
  std::vector<std::string> attributes;  // ParentDriver::AttributeNames().
  std::vector<MdevTypeStatus> types;
};

struct MdevStatus {
  Uuid uuid;
  std::string parent;
  std::string type_id;
  unsigned iommu_group = 0;
  bool open = false;
  // The backend revoked its pins (Device::is_broken()) and no reset has
  // cleared that yet: what a cluster agent reports as unhealthy.
  bool broken = false;
  // The VM the open instance serves, when one was latched.
  std::optional<VmIdentity> vm;
};

// A device a bus driver registers (kernel vfio_register_group_dev, as
// vfio-pci does): not an instance of a parent's type but a device of its
// own, named by its bus address, in its real IOMMU group, which may hold
// several such devices.
struct BusDeviceSpec {
  std::string name;    // "0000:01:00.0": GET_DEVICE_FD's name, the socket's
  std::string driver;  // The bus driver's name ("passthrough").
  unsigned iommu_group = 0;
  // The group's IOMMU (see Group); the group's first device sets it.
  std::shared_ptr<IommuDriver> iommu_driver;
  // Makes the vendor object, with no registry lock held (the kernel's
  // probe); the Device is its DmaAccess.
  std::function<Result<std::unique_ptr<DeviceOps>>(Device&)> probe;
};

struct BusDeviceStatus {
  std::string name;
  std::string driver;
  unsigned iommu_group = 0;
  bool open = false;
  // The client's VM (its pid at least) while open, when one was latched.
  std::optional<VmIdentity> vm;
  // Why the device may still hold its last user's state (Device::
  // needs_reset); empty when it was reset.
  std::string needs_reset;
};

// Told of changes after they happen, with no registry lock held, on the
// thread that made the change. Must not block for long.
class RegistryObserver {
 public:
  virtual ~RegistryObserver() = default;
  // The parent uevents (MDEV_STATE=registered / unregistered).
  virtual void OnParentRegistered(const std::string& parent) { (void)parent; }
  virtual void OnParentUnregistered(const std::string& parent) { (void)parent; }
  // Before a new instance becomes visible, with no registry lock held: an
  // observer that must set something up for it (the vfio-user server binds
  // its socket) does it here, and may refuse the instance with its errno
  // (EMFILE at the descriptor limit). The create then fails with that error
  // and leaves nothing behind: AbandonMdev() undoes the observers that had
  // prepared, and OnMdevCreated() is never called.
  virtual Result<void> PrepareMdev(const Uuid& uuid) {
    (void)uuid;
    return {};
  }
  virtual void AbandonMdev(const Uuid& uuid) { (void)uuid; }
  virtual void OnMdevCreated(const MdevStatus& mdev) { (void)mdev; }
  virtual void OnMdevRemoved(const MdevStatus& mdev) { (void)mdev; }
  // The same for a bus driver's devices (Registry::RegisterDevice).
  virtual Result<void> PrepareDevice(const std::string& name) {
    (void)name;
    return {};
  }
  virtual void AbandonDevice(const std::string& name) { (void)name; }
  virtual void OnDeviceRegistered(const BusDeviceStatus& device) { (void)device; }
  virtual void OnDeviceUnregistered(const BusDeviceStatus& device) { (void)device; }
};

// Thread-safe. Vendor drivers are called with no registry lock held.
class Registry {
 public:
  explicit Registry(RegistryOptions options = {});
  // Unregisters every parent, removing their instances.
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  IommuDrivers& iommu_drivers() { return iommu_drivers_; }

  // kernel mdev_register_parent. Errors: EINVAL null driver, empty name or
  // device_api, no types, or a duplicate type name; EEXIST a parent of that
  // name is registered.
  Result<void> RegisterParent(std::shared_ptr<ParentDriver> driver) UMDEV_EXCLUDES(mu_);
  // kernel mdev_unregister_parent: refuses new instances (ENODEV), waits for
  // creations in progress, then removes every instance (no veto). Errors:
  // ENODEV no such parent or already unregistering.
  Result<void> UnregisterParent(std::string_view parent) UMDEV_EXCLUDES(mu_);

  // Writing |uuid| to <parent>/mdev_supported_types/<type_id>/create.
  // Errors: ENODEV unknown or unregistering parent, unknown type; EEXIST the
  // UUID is in use under any parent; EUSERS the parent's shared counter is at
  // 0; the vendor's probe errors, after which nothing of the instance remains.
  Result<void> CreateMdev(std::string_view parent, std::string_view type_id, const Uuid& uuid)
      UMDEV_EXCLUDES(mu_);
  // Writing 1 to <uuid>/remove. Waits for the user as RegistryOptions says.
  // Errors: ENODEV unknown, or its parent is unregistering; EAGAIN already
  // being removed (or still being created).
  Result<void> RemoveMdev(const Uuid& uuid) UMDEV_EXCLUDES(mu_);

  // kernel vfio_register_group_dev. Errors: EINVAL an empty name or
  // driver, a name with '/' or longer than 64 bytes, no probe; EEXIST the
  // name is taken (by a device or an mdev's UUID); EBUSY the group number
  // is an emulated group's, or the group is in use; the probe's errors,
  // after which nothing of the device remains; an observer's refusal.
  Result<void> RegisterDevice(BusDeviceSpec spec) UMDEV_EXCLUDES(mu_);
  // kernel vfio_unregister_group_dev: waits for the user as
  // RegistryOptions says, then the device leaves its group (the group goes
  // with its last device). Errors: ENODEV no such device; EAGAIN already
  // being unregistered.
  Result<void> UnregisterDevice(std::string_view name) UMDEV_EXCLUDES(mu_);
  std::vector<BusDeviceStatus> BusDevices() const UMDEV_EXCLUDES(mu_);
  // The group of a bus device or of an mdev (by its UUID string). Errors:
  // ENODEV neither.
  Result<std::shared_ptr<Group>> FindGroupOfDevice(std::string_view name) const
      UMDEV_EXCLUDES(mu_);

  std::vector<ParentStatus> Parents() const UMDEV_EXCLUDES(mu_);
  std::vector<MdevStatus> Mdevs() const UMDEV_EXCLUDES(mu_);
  // Errors: ENODEV no active instance.
  Result<MdevStatus> FindMdev(const Uuid& uuid) const UMDEV_EXCLUDES(mu_);
  // The IOMMU group of an active instance (to Open(), or for the cdev path).
  // Errors: ENODEV none.
  Result<std::shared_ptr<Group>> FindGroup(unsigned group_id) const UMDEV_EXCLUDES(mu_);
  Result<std::shared_ptr<Group>> FindGroupOf(const Uuid& uuid) const UMDEV_EXCLUDES(mu_);

  // A parent's attribute, read live from its driver with no registry lock
  // held. Errors: ENODEV no such parent; the driver's (ENOENT).
  Result<std::string> ReadParentAttribute(std::string_view parent, std::string_view name) const
      UMDEV_EXCLUDES(mu_);

  // An active instance's usage (Device::CurrentUsage). Errors: ENODEV.
  Result<Device::Usage> MdevUsage(const Uuid& uuid) const UMDEV_EXCLUDES(mu_);

  // The per-instance attributes of an active instance (see Device). Errors:
  // ENODEV no active instance; the vendor's (ENOENT, EACCES, EINVAL, ...).
  Result<std::vector<DeviceAttribute>> MdevAttributes(const Uuid& uuid) const UMDEV_EXCLUDES(mu_);
  Result<std::string> ReadMdevAttribute(const Uuid& uuid, std::string_view name) const
      UMDEV_EXCLUDES(mu_);
  Result<void> WriteMdevAttribute(const Uuid& uuid, std::string_view name,
                                  std::string_view value) UMDEV_EXCLUDES(mu_);

  // A new empty container whose SET_IOMMU chooses among iommu_drivers().
  std::shared_ptr<Container> CreateContainer() { return std::make_shared<Container>(iommu_drivers_); }

  // Not owned; must be removed before it is destroyed.
  void AddObserver(RegistryObserver* observer) UMDEV_EXCLUDES(mu_);
  void RemoveObserver(RegistryObserver* observer) UMDEV_EXCLUDES(mu_);

 private:
  struct Parent;
  struct Mdev;
  struct BusDevice;

  std::shared_ptr<Parent> FindParentLocked(std::string_view name) const UMDEV_REQUIRES(mu_);
  MdevStatus StatusLocked(const Mdev& mdev) const UMDEV_REQUIRES(mu_);
  Result<std::shared_ptr<Device>> FindDevice(const Uuid& uuid) const UMDEV_EXCLUDES(mu_);
  unsigned AllocateGroupIdLocked() UMDEV_REQUIRES(mu_);
  // Tears down an instance already marked as being removed.
  void Teardown(const std::shared_ptr<Mdev>& mdev) UMDEV_EXCLUDES(mu_);
  template <typename F>
  void Notify(F&& f) UMDEV_EXCLUDES(mu_);
  // |prepare| (PrepareMdev or PrepareDevice) on every observer; on a
  // refusal, |abandon| on those that had prepared, and the refusal is
  // returned.
  template <typename Prepare, typename Abandon>
  Result<void> PrepareObservers(Prepare prepare, Abandon abandon) UMDEV_EXCLUDES(mu_);
  BusDeviceStatus StatusLocked(const BusDevice& device) const UMDEV_REQUIRES(mu_);

  const RegistryOptions options_;
  IommuDrivers iommu_drivers_;
  mutable Mutex mu_;
  CondVar changed_;
  std::map<std::string, std::shared_ptr<Parent>, std::less<>> parents_ UMDEV_GUARDED_BY(mu_);
  // Every instance of every parent: UUIDs are unique system-wide.
  std::map<Uuid, std::shared_ptr<Mdev>> mdevs_ UMDEV_GUARDED_BY(mu_);
  // Bus drivers' devices by name, and their real groups by number.
  std::map<std::string, std::shared_ptr<BusDevice>, std::less<>> bus_devices_ UMDEV_GUARDED_BY(mu_);
  std::map<unsigned, std::shared_ptr<Group>> real_groups_ UMDEV_GUARDED_BY(mu_);
  std::vector<RegistryObserver*> observers_ UMDEV_GUARDED_BY(mu_);
};

}  // namespace umdev
