// MttyParent: the "mtty" parent — virtual PCI 16550 serial cards (the kernel's
// samples/vfio-mdev/mtty.c) sharing one budget of ports.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/irq/virqfd.h"
#include "umdev/mdev_core/parent_driver.h"

namespace umdev::vendor::serial {

struct MttyOptions {
  std::string parent_name = "mtty";
  unsigned total_ports = 24;  // The kernel sample's MAX_MTTYS.
};

// Types "mtty-1" (one port, "Single port serial") and "mtty-2" (two ports,
// "Dual port serial"). Each instance is a PCI function 4348:3253 with one
// 8-byte I/O BAR per port, INTx pin A and an MSI capability, and the
// per-instance attributes:
//   far_end  rw  "loopback" (default), "pty" or "socket:PATH"; EBUSY while
//                the device is open; EINVAL for any other value.
//   pty      ro  the pty slave paths, space-separated in port order, when
//                far_end is "pty"; empty otherwise.
// Thread-safe.
class MttyParent final : public ParentDriver {
 public:
  // Starts the interrupt-resample loop the instances share. Errors: EINVAL
  // total_ports 0; the loop's (epoll/eventfd errno).
  static Result<std::shared_ptr<MttyParent>> Create(MttyOptions options = {});

  std::string parent_name() const override { return options_.parent_name; }
  std::string driver_name() const override { return "mtty"; }
  std::vector<MdevTypeSpec> types() const override;
  // Free ports / ports per type (kernel: mtty_get_available).
  unsigned AvailableInstances(const MdevTypeSpec& type) override;
  // Reserves the type's ports; they return when the device is destroyed.
  // Errors: ENOSPC not enough free ports (the kernel sample's answer);
  // EINVAL a type this parent does not offer.
  Result<std::unique_ptr<DeviceOps>> Probe(const ProbeContext& context) override;

  unsigned free_ports() const UMDEV_EXCLUDES(budget_->mu);

 private:
  // Shared with the devices, which may outlive the parent.
  struct Budget {
    Mutex mu;
    unsigned free UMDEV_GUARDED_BY(mu) = 0;
  };

  MttyParent(MttyOptions options, std::shared_ptr<irq::VirqfdLoop> loop);
  static unsigned PortsOf(const MdevTypeSpec& type);

  const MttyOptions options_;
  const std::shared_ptr<irq::VirqfdLoop> loop_;
  const std::shared_ptr<Budget> budget_;
};

}  // namespace umdev::vendor::serial
