// Vm, VmPolicy, VmClaims and DeviceVmState: which VM a device serves (kernel:
// the struct kvm that vfio_file_set_kvm() records and the first open latches).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"

namespace umdev {

// What is known of a VM. Fields that could not be read stay empty ("unknown").
struct VmIdentity {
  std::string uuid;    // QEMU -uuid, lower case.
  std::string name;    // QEMU -name NAME or -name guest=NAME,...
  pid_t pid = 0;       // The VMM process.
  std::string accel;   // "kvm", "tcg", "qtest", "unknown" or "none" (not a VM).
  std::string cgroup;  // The cgroup v2 path of the process.
};

// A VM as the core holds it: a reference that keeps whatever the holder
// needs alive (kvm/ keeps the VM's fd), like the kernel's kvm reference.
// Thread-safe; immutable after construction.
class Vm {
 public:
  virtual ~Vm() = default;
  virtual const VmIdentity& identity() const = 0;
  // Whether |other| is the same VM (kernel: the same struct kvm).
  virtual bool SameVm(const Vm& other) const = 0;
  // Whether the process is a virtual machine at all (not "none").
  bool is_vm() const { return identity().accel != "none"; }
  // "NAME (pid N)" or "pid N" for logs and messages.
  std::string Describe() const;
};

// Rules a type declares about the VM that opens its instances.
struct VmPolicy {
  // Opening without a VM is ESRCH (kvmgt: "KVM is required").
  bool requires_vm = false;
  // A second instance of the same parent opened by the same VM is EEXIST
  // (kvmgt __kvmgt_vgpu_exist).
  bool one_per_vm = false;
};

// Which open instances of one parent hold which VM, for VmPolicy::one_per_vm.
// Thread-safe.
class VmClaims {
 public:
  // Errors: EEXIST another instance holds |vm|.
  Result<void> Claim(const void* instance, const std::shared_ptr<const Vm>& vm,
                     std::string_view instance_name) UMDEV_EXCLUDES(mu_);
  void Release(const void* instance) UMDEV_EXCLUDES(mu_);

 private:
  struct Entry {
    const void* instance;
    std::shared_ptr<const Vm> vm;
    std::string name;
  };
  Mutex mu_;
  std::vector<Entry> entries_ UMDEV_GUARDED_BY(mu_);
};

// One device's association: its policy, its binding (bound_vm_uuid) and the
// VM latched by the first open, released at the last close. Called by the
// device's open/close paths and by attribute readers (any thread).
class DeviceVmState {
 public:
  DeviceVmState(VmPolicy policy, std::shared_ptr<VmClaims> claims)
      : policy_(policy), claims_(std::move(claims)) {}

  // First open. Errors: ESRCH the policy requires a VM and there is none;
  // EPERM bound to another VM's UUID; EEXIST (one_per_vm) the VM holds
  // another instance of the parent.
  Result<void> Latch(std::shared_ptr<const Vm> vm, std::string_view device_name)
      UMDEV_EXCLUDES(mu_);
  // Last close.
  void Release() UMDEV_EXCLUDES(mu_);
  std::shared_ptr<const Vm> latched() const UMDEV_EXCLUDES(mu_);

  // The attributes every instance has: vm_uuid, vm_name, vm_pid, vm_accel
  // (read-only, empty while closed) and bound_vm_uuid (empty: any VM).
  static std::vector<std::string> AttributeNames();
  static bool IsAttribute(std::string_view name);
  Result<std::string> ReadAttribute(std::string_view name) const UMDEV_EXCLUDES(mu_);
  // Errors: EACCES a read-only one; EINVAL not a UUID.
  Result<void> WriteAttribute(std::string_view name, std::string_view value) UMDEV_EXCLUDES(mu_);

 private:
  const VmPolicy policy_;
  const std::shared_ptr<VmClaims> claims_;  // Null unless policy_.one_per_vm.
  mutable Mutex mu_;
  std::shared_ptr<const Vm> latched_ UMDEV_GUARDED_BY(mu_);
  std::string bound_uuid_ UMDEV_GUARDED_BY(mu_);
};

}  // namespace umdev
