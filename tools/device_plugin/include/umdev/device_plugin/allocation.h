// Allocation for kubelet: what a container that is given some devices gets
// (a bind mount of each device's vfio-user socket, variables naming them,
// their CDI names), and which devices to prefer for a request.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/device_plugin/config.h"
#include "umdev/device_plugin/inventory.h"

namespace umdev::device_plugin {

// Most device IDs one container request may name (kubelet asks for what a
// pod's limits say; anything larger is not a request this node can meet).
inline constexpr size_t kMaxDevicesPerRequest = kMaxDevicesPerResource;

struct SocketMount {
  std::string container_path;
  std::string host_path;
  bool operator==(const SocketMount&) const = default;
};

struct ContainerAllocation {
  std::map<std::string, std::string> envs;
  std::vector<SocketMount> mounts;
  std::vector<std::string> cdi_devices;  // umdev.io/device=UUID
};

struct SocketLayout {
  std::string host_dir;
  std::string container_dir;
};

// UMDEV_SOCKETS_<NAME>: the resource's name in capitals, other characters
// than letters and digits as '_' (umdev.io/gpu0.gpu-1of4: UMDEV_SOCKETS_GPU0_GPU_1OF4).
std::string ResourceVariable(const ResourceSpec& resource);

// The container's share of Allocate for |ids|: each must be one of
// |devices|, named once. Envs: UMDEV_SOCKETS (the container paths, comma
// separated, in request order), the resource's variable (the same list, so
// that a container with several resources can tell them apart) and
// UMDEV_SOCKET_<UUID> per device as in the CDI spec. Errors: EINVAL an
// unknown or repeated ID, or too many; ENODEV a device that is not running
// (its socket does not exist).
Result<ContainerAllocation> AllocateContainer(const ResourceSpec& resource,
                                              const std::vector<DeviceState>& devices,
                                              const std::vector<std::string>& ids,
                                              const SocketLayout& layout);

// |size| devices from |available|, |must_include| among them, the rest
// taken parent by parent: first the parents |must_include| already uses,
// then the parent that fits the rest whole with the fewest to spare (so
// larger pools stay whole for larger requests), then the largest pools.
// Errors: EINVAL size out of range, IDs not among |devices| or not in
// |available|, repeated IDs.
Result<std::vector<std::string>> PreferredAllocation(const std::vector<DeviceState>& devices,
                                                     const std::vector<std::string>& available,
                                                     const std::vector<std::string>& must_include,
                                                     int size);

}  // namespace umdev::device_plugin
