// umdevctl passthrough bind|unbind|list (docs/passthrough.md): hand host PCI
// functions to vfio-pci as driverctl does, give them back, and list what
// umdevd serves.
#pragma once

#include <string>
#include <vector>

#include "umdev/cli/commands.h"
#include "umdev/common/pci_sysfs.h"

namespace umdev::cli {

// Binds each of |addresses| to vfio-pci: driver_override, unbind from its
// driver, drivers_probe. Refused before anything is written (status 1)
// when an address is not a function, or when a function of one of their
// IOMMU groups that is not being bound is still on a host driver (each is
// named: the kernel would not call the group viable). After the writes,
// each function must be on vfio-pci ("modprobe vfio-pci" otherwise).
Outcome PassthroughBind(const pci::Sysfs& sysfs, const std::vector<std::string>& addresses);

// Gives each of |addresses| back to the host: driver_override cleared,
// unbound from vfio-pci, drivers_probe. Refused while umdevd serves it
// (|call| asks; the daemon holds the group, and vfio-pci's unbind would
// wait for it), or when it is not on vfio-pci.
Outcome PassthroughUnbind(const Transport& call, const pci::Sysfs& sysfs,
                          const std::vector<std::string>& addresses);

// The functions umdevd serves: address, IOMMU group, host driver, whether
// a client has it open.
Outcome PassthroughList(const Transport& call, const pci::Sysfs& sysfs, bool json);

}  // namespace umdev::cli
