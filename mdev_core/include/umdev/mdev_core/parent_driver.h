// ParentDriver: what a vendor registers to offer mdev types (kernel:
// mdev_parent + mdev_driver + mdev_type).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/uuid.h"
#include "umdev/mdev_core/device_ops.h"
#include "umdev/mdev_core/vm.h"

namespace umdev {

class DmaAccess;

// One mdev type as the vendor describes it. Its sysfs directory is
// "<driver_name>-<sysfs_name>" (kernel: dev_driver_string + sysfs_name).
struct MdevTypeSpec {
  std::string sysfs_name;   // e.g. "1" for mtty-1.
  std::string pretty_name;  // Shown in "name"; empty: sysfs_name is shown.
  std::string description;  // Empty: no "description" attribute.
  VmPolicy vm_policy;       // What the VM opening an instance must satisfy.
};

// What Probe() is told about the instance being created.
struct ProbeContext {
  const MdevTypeSpec& type;
  Uuid uuid;
  // The instance's path to guest memory (pin/unpin/dma_rw). Owned by the core;
  // outlives the DeviceOps that Probe() returns.
  DmaAccess& dma;
};

// Thread-safe: the registry calls from control, sysfs and teardown threads,
// never with a registry lock held.
class ParentDriver {
 public:
  virtual ~ParentDriver() = default;

  // The parent device's name: /sys/class/mdev_bus/<parent_name>.
  virtual std::string parent_name() const = 0;
  // The type directory prefix (kernel dev_driver_string(), e.g. "mtty").
  virtual std::string driver_name() const = 0;
  virtual std::string device_api() const { return "vfio-pci"; }
  virtual std::vector<MdevTypeSpec> types() const = 0;

  // > 0: a counter shared by all types (kernel mdev_driver.max_instances);
  // the core refuses creation with EUSERS at 0. 0: AvailableInstances()
  // reports capacity and Probe() enforces it.
  virtual unsigned max_instances() const { return 0; }
  // kernel get_available(); only asked when max_instances() is 0.
  virtual unsigned AvailableInstances(const MdevTypeSpec& type) { (void)type; return 0; }

  // Creates the instance. Errors propagate to the creator unchanged; nothing
  // of the instance may remain on failure.
  virtual Result<std::unique_ptr<DeviceOps>> Probe(const ProbeContext& context) = 0;

  // Read-only attributes of the parent device itself (sysfs: files in the
  // parent's directory, as a driver's dev_groups add), for operators: a
  // scheduler's policy, memory left. Names only; values are read live.
  virtual std::vector<std::string> AttributeNames() const { return {}; }
  // Errors: ENOENT no such attribute.
  virtual Result<std::string> ReadAttribute(std::string_view name) const {
    return Fail(ENOENT, "no parent attribute " + std::string(name));
  }
};

}  // namespace umdev
