// The VFIO migration v2 state machine: which single arc the core asks a
// device for next on its way to a requested state (kernel:
// vfio_mig_get_next_state() and the FSM text in include/uapi/linux/vfio.h).
#pragma once

#include <linux/vfio.h>

#include <cstdint>
#include <string_view>

#include "umdev/common/error.h"

namespace umdev {

// Uapi values newer than the <linux/vfio.h> of our oldest build host
// (Linux 6.1 lacks PRE_COPY, added in 6.2), spelled here so both build.
inline constexpr uint64_t kVfioMigrationPreCopy = 1u << 2;
inline constexpr vfio_device_mig_state kVfioStatePreCopy = static_cast<vfio_device_mig_state>(6);
inline constexpr vfio_device_mig_state kVfioStatePreCopyP2P =
    static_cast<vfio_device_mig_state>(7);
inline constexpr uint32_t kVfioStateCount = 8;  // ERROR .. PRE_COPY_P2P.
inline constexpr uint32_t kVfioDeviceFeatureMigDataSize = 9;
#ifdef VFIO_MIGRATION_PRE_COPY
static_assert(VFIO_MIGRATION_PRE_COPY == kVfioMigrationPreCopy);
static_assert(VFIO_DEVICE_STATE_PRE_COPY == kVfioStatePreCopy);
static_assert(VFIO_DEVICE_STATE_PRE_COPY_P2P == kVfioStatePreCopyP2P);
static_assert(VFIO_DEVICE_FEATURE_MIG_DATA_SIZE == kVfioDeviceFeatureMigDataSize);
#endif

// "RUNNING", "PRE_COPY_P2P", ...; "INVALID" for values outside the enum.
std::string_view MigrationStateName(vfio_device_mig_state state);

// STOP_COPY, PRE_COPY and PRE_COPY_P2P: the states that share one saving
// data session (the uapi's "saving group").
bool IsSavingState(vfio_device_mig_state state);

// Whether a device with migration |flags| (VFIO_MIGRATION_*) implements
// |state|, i.e. may be asked to go there. Every state needs STOP_COPY;
// RUNNING_P2P needs P2P, PRE_COPY needs PRE_COPY, PRE_COPY_P2P needs both.
// ERROR is never a state one may ask for.
bool MigrationStateSupported(uint64_t flags, vfio_device_mig_state state);

// Whether the device implements the single arc |from| -> |to| (the arcs the
// uapi lists for its flags; other transitions are combinations of these).
bool IsMigrationArc(uint64_t flags, vfio_device_mig_state from, vfio_device_mig_state to);

// The next arc from |current| toward |target|: the first step of the
// shortest path over the device's arcs whose interior states are all saving
// states when both ends are, and none otherwise (a transition neither opens
// a data session in passing nor ends one and starts another). Returns
// |current| when it is |target|.
// Errors: EINVAL |current| or |target| not supported (ERROR included: it is
// left only by a device reset), or no such path (STOP_COPY -> PRE_COPY*).
Result<vfio_device_mig_state> NextMigrationState(uint64_t flags, vfio_device_mig_state current,
                                                 vfio_device_mig_state target);

}  // namespace umdev
