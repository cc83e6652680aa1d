// PassthroughDriver: the bus driver for PCI functions bound to the host
// kernel's vfio-pci (docs/passthrough.md). Each configured function is
// registered with the core (Registry::RegisterDevice) in its real IOMMU
// group: its DeviceOps open the kernel device fd for each client and hand
// the client's calls to it, and the group's IommuDriver gives each client
// session a kernel container of its own.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/common/pci_sysfs.h"
#include "umdev/mdev_core/registry.h"
#include "umdev/passthrough/host_vfio.h"
#include "umdev/passthrough/vfio_kernel.h"

namespace umdev::passthrough {

class GroupBook;

// The group's IOMMU for the core: SET_IOMMU type1v2 makes a HostContainer
// (a kernel container with the group in it). Thread-safe.
class HostIommuDriver final : public IommuDriver {
 public:
  HostIommuDriver(VfioKernel& kernel, std::shared_ptr<HostGroup> group,
                  std::shared_ptr<pinning::LockedMemoryAccount> account)
      : kernel_(kernel), group_(std::move(group)), account_(std::move(account)) {}
  std::string_view name() const override { return "host vfio type1"; }
  bool Supports(uint32_t type) const override { return type == VFIO_TYPE1v2_IOMMU; }
  Result<std::unique_ptr<IommuBackend>> Create(uint32_t type) override UMDEV_EXCLUDES(mu_);
  // The container the group is in now (the kernel allows one at a time):
  // the open session's; null between sessions.
  std::shared_ptr<HostContainer> Current() const UMDEV_EXCLUDES(mu_);

 private:
  VfioKernel& kernel_;
  const std::shared_ptr<HostGroup> group_;
  const std::shared_ptr<pinning::LockedMemoryAccount> account_;
  mutable Mutex mu_;
  std::weak_ptr<HostContainer> current_ UMDEV_GUARDED_BY(mu_);
};

// Thread-safe. Registration and removal from the daemon's thread.
class PassthroughDriver {
 public:
  // |kernel| outlives the driver; |sysfs| says where /sys is; |account|
  // (may be null) is charged what clients map (locked_memory_bytes).
  PassthroughDriver(Registry& registry, VfioKernel& kernel, pci::Sysfs sysfs,
                    std::shared_ptr<pinning::LockedMemoryAccount> account = nullptr);
  // Unregisters every device it registered.
  ~PassthroughDriver();
  PassthroughDriver(const PassthroughDriver&) = delete;
  PassthroughDriver& operator=(const PassthroughDriver&) = delete;

  // Serves |address|. Errors, each saying what to do: EINVAL not a PCI
  // address; ENODEV no such function, or no IOMMU group (the host needs its
  // IOMMU on: intel_iommu=on / amd_iommu=on); EBUSY bound to another driver
  // (with the commands that bind it) or a group that is not viable;
  // Registry::RegisterDevice's (EEXIST served already).
  Result<void> Add(const std::string& address) UMDEV_EXCLUDES(mu_);
  // Stops serving |address| (its client is asked to let go, then revoked).
  // Errors: ENODEV not served by this driver.
  Result<void> Remove(const std::string& address) UMDEV_EXCLUDES(mu_);
  std::vector<std::string> Devices() const UMDEV_EXCLUDES(mu_);

 private:
  struct GroupEntry {
    std::shared_ptr<HostGroup> group;
    std::shared_ptr<HostIommuDriver> iommu;
    unsigned devices = 0;
  };

  Registry& registry_;
  VfioKernel& kernel_;
  const pci::Sysfs sysfs_;
  const std::shared_ptr<pinning::LockedMemoryAccount> account_;
  // The groups held and their open functions, shared with the devices
  // (a bus reset reaches only functions nobody uses).
  const std::shared_ptr<GroupBook> book_;
  mutable Mutex mu_;
  std::map<unsigned, GroupEntry> groups_ UMDEV_GUARDED_BY(mu_);
  std::map<std::string, unsigned> devices_ UMDEV_GUARDED_BY(mu_);  // address -> group
};

}  // namespace umdev::passthrough
