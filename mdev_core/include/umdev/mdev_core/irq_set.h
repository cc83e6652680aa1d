// ValidateIrqSet: the checks VFIO_DEVICE_SET_IRQS makes before a device sees it.
#pragma once

#include "umdev/common/error.h"
#include "umdev/mdev_core/device_ops.h"

namespace umdev {

// kernel vfio_set_irqs_validate_and_prepare(), plus the vfio-user spec rule
// that count 0 is only DATA_NONE|ACTION_TRIGGER (disable all). Errors: EINVAL
// for unknown flags, not exactly one data type and one action, an IRQ with no
// vectors, start/count outside it, or data that does not match |count|.
Result<void> ValidateIrqSet(const IrqInfo& info, const IrqSet& set);

}  // namespace umdev
