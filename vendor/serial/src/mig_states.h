// Migration v2 names that Debian 12's <linux/vfio.h> (Linux 6.1) lacks: the
// PRE_COPY states came in Linux 6.2. Values are the uapi's.
#pragma once

#include <linux/vfio.h>

#include <cstdint>

namespace umdev::vendor::serial {

inline constexpr uint64_t kMigrationPreCopy = 1u << 2;  // VFIO_MIGRATION_PRE_COPY
inline constexpr auto kStatePreCopy = static_cast<vfio_device_mig_state>(6);
inline constexpr auto kStatePreCopyP2P = static_cast<vfio_device_mig_state>(7);

}  // namespace umdev::vendor::serial
