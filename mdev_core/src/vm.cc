// Vm, VmClaims and DeviceVmState: the kernel's kvm association rules.
#include "umdev/mdev_core/vm.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "umdev/common/uuid.h"

namespace umdev {
namespace {

constexpr std::array<std::string_view, 5> kAttributeNames = {
    "vm_uuid", "vm_name", "vm_pid", "vm_accel", "bound_vm_uuid"};

}  // namespace

std::string Vm::Describe() const {
  const VmIdentity& id = identity();
  if (!id.name.empty()) return fmt::format("{} (pid {})", id.name, id.pid);
  if (!id.uuid.empty()) return fmt::format("{} (pid {})", id.uuid, id.pid);
  return fmt::format("pid {}", id.pid);
}

Result<void> VmClaims::Claim(const void* instance, const std::shared_ptr<const Vm>& vm,
                             std::string_view instance_name) {
  MutexLock lock(mu_);
  for (const Entry& entry : entries_) {
    if (entry.instance != instance && entry.vm->SameVm(*vm)) {
      return Fail(EEXIST, fmt::format("VM {} already has {} of this parent open; the type allows "
                                      "one instance per VM",
                                      vm->Describe(), entry.name));
    }
  }
  entries_.push_back(Entry{instance, vm, std::string(instance_name)});
  return {};
}

void VmClaims::Release(const void* instance) {
  MutexLock lock(mu_);
  std::erase_if(entries_, [&](const Entry& entry) { return entry.instance == instance; });
}

Result<void> DeviceVmState::Latch(std::shared_ptr<const Vm> vm, std::string_view device_name) {
  // The checks in kvmgt's order: a VM at all, then which VM.
  const bool is_vm = vm != nullptr && vm->is_vm();
  if (policy_.requires_vm && !is_vm) {
    return Fail(ESRCH, fmt::format("this type requires a VM (the client is {})",
                                   vm != nullptr ? vm->Describe() : "unknown"));
  }
  MutexLock lock(mu_);
  if (!bound_uuid_.empty()) {
    const std::string their = vm != nullptr ? vm->identity().uuid : std::string();
    if (their != bound_uuid_) {
      return Fail(EPERM, fmt::format("bound to the VM with UUID {}; the client ({}) has {}",
                                     bound_uuid_,
                                     vm != nullptr ? vm->Describe() : "unknown",
                                     their.empty() ? "no -uuid" : "UUID " + their));
    }
  }
  if (policy_.one_per_vm && claims_ != nullptr && is_vm) {
    UMDEV_TRY(claims_->Claim(this, vm, device_name));
  }
  latched_ = std::move(vm);
  return {};
}

void DeviceVmState::Release() {
  std::shared_ptr<const Vm> released;
  {
    MutexLock lock(mu_);
    released = std::move(latched_);  // Leaves latched_ null.
  }
  if (claims_ != nullptr) claims_->Release(this);
  // |released| (maybe the last reference, closing the VM's fd) dies unlocked.
}

std::shared_ptr<const Vm> DeviceVmState::latched() const {
  MutexLock lock(mu_);
  return latched_;
}

std::vector<std::string> DeviceVmState::AttributeNames() {
  return {kAttributeNames.begin(), kAttributeNames.end()};
}

bool DeviceVmState::IsAttribute(std::string_view name) {
  return std::find(kAttributeNames.begin(), kAttributeNames.end(), name) != kAttributeNames.end();
}

Result<std::string> DeviceVmState::ReadAttribute(std::string_view name) const {
  MutexLock lock(mu_);
  if (name == "bound_vm_uuid") return bound_uuid_;
  if (latched_ == nullptr) {
    if (IsAttribute(name)) return std::string();
    return Fail(ENOENT, "no attribute " + std::string(name));
  }
  const VmIdentity& id = latched_->identity();
  if (name == "vm_uuid") return id.uuid;
  if (name == "vm_name") return id.name;
  if (name == "vm_pid") return id.pid > 0 ? std::to_string(id.pid) : std::string();
  if (name == "vm_accel") return id.accel;
  return Fail(ENOENT, "no attribute " + std::string(name));
}

Result<void> DeviceVmState::WriteAttribute(std::string_view name, std::string_view value) {
  if (name != "bound_vm_uuid") {
    if (IsAttribute(name)) return Fail(EACCES, std::string(name) + " is read-only");
    return Fail(ENOENT, "no attribute " + std::string(name));
  }
  std::string bound;
  if (!value.empty()) {
    auto uuid = Uuid::Parse(value);
    if (!uuid.has_value()) {
      return Fail(EINVAL, fmt::format("bound_vm_uuid: '{}' is not a UUID", value));
    }
    bound = uuid->ToString();
  }
  MutexLock lock(mu_);
  // Like the kernel's kvm pointer, a binding changed while open applies from
  // the next first open.
  bound_uuid_ = std::move(bound);
  return {};
}

}  // namespace umdev
