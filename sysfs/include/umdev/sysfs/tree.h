// Tree: the kernel's mdev sysfs layout, generated from the Registry on every
// call, so the tree never disagrees with the registry (no second copy).
//
// Paths are relative to the directory that plays /sys ("class/mdev_bus/p",
// a leading '/' is ignored, "" is the root):
//   class/mdev_bus/<parent>              -> ../../devices/virtual/umdev/<parent>
//   bus/mdev/devices/<uuid>              -> ../../../devices/virtual/umdev/<parent>/<uuid>
//   bus/mdev/drivers/<driver>/<uuid>     -> ../../../../devices/virtual/umdev/<parent>/<uuid>
//   devices/virtual/umdev/<parent>/mdev_supported_types/<type>/
//       create (0200) name description available_instances device_api (0444)
//       devices/<uuid>                   -> ../../../<uuid>
//   devices/virtual/umdev/<parent>/<uuid>/
//       remove (0200) uevent (0644) vfio_user_socket (0444)
//       mdev_type -> ../mdev_supported_types/<type>   driver subsystem iommu_group
//       <vendor attributes> (0444/0644/0200; a '/' in a name is a subdirectory)
//   kernel/iommu_groups/<n>/devices/<uuid> -> the device directory
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/uuid.h"
#include "umdev/mdev_core/registry.h"

namespace umdev::sysfs {

enum class NodeKind { kDirectory, kFile, kSymlink };

// What stat() shows of one node.
struct NodeInfo {
  NodeKind kind = NodeKind::kDirectory;
  mode_t mode = 0;     // Permission bits only: 0755 dirs, 0777 links, files as sysfs.
  std::string target;  // Symlinks: the relative target, as the kernel writes it.
};

struct TreeOptions {
  // The vfio-user socket of a device (an mdev's UUID string, a bus device's
  // address), shown in its vfio_user_socket attribute; unset: the attribute
  // does not exist.
  std::function<std::string(std::string_view name)> socket_path;
};

// Parses what a write to a type's "create" carries, as the kernel's
// create_store(): 36 or 37 bytes, the first 36 a UUID (guid_parse() ignores
// the 37th, normally '\n'). Errors: EINVAL.
Result<Uuid> ParseCreateWrite(std::string_view data);
// Parses what a write to an instance's "remove" carries, as kstrtoul(buf, 0):
// optional '+', a decimal, 0x-hex or 0-octal number, one optional trailing
// '\n'. Errors: EINVAL (the kernel maps ERANGE to EINVAL too).
Result<unsigned long> ParseRemoveWrite(std::string_view data);

// Thread-safe (the Registry is; the tree keeps no state of its own). Called
// from FUSE worker threads and control-socket threads.
class Tree {
 public:
  explicit Tree(Registry& registry, TreeOptions options = {});

  // lstat(): symlinks inside the path are followed, a final one is not.
  // Errors: ENOENT no such node; ENOTDIR a file used as a directory; ELOOP.
  Result<NodeInfo> Stat(std::string_view path) const;
  // The entry names of a directory (following symlinks), sorted, without
  // "." and "..". Errors: Stat's; ENOTDIR not a directory.
  Result<std::vector<std::string>> List(std::string_view path) const;
  // Errors: Stat's; EINVAL not a symlink.
  Result<std::string> ReadLink(std::string_view path) const;
  // The canonical (symlink-free) path of a node, like realpath(). Errors: Stat's.
  Result<std::string> Resolve(std::string_view path) const;

  // A read of a whole attribute (following symlinks). Errors: Stat's;
  // EISDIR a directory; EACCES not readable (kernfs refuses the open, even
  // to root); the vendor's errors for its attributes.
  Result<std::string> Read(std::string_view path) const;
  // One write() to an attribute. Errors: Stat's; EISDIR; EACCES not
  // writable; the attribute's: create: EINVAL bad UUID, EEXIST UUID in use,
  // EUSERS no instance left, ENODEV parent going away, the vendor's probe
  // errors; remove: EINVAL not an integer, EAGAIN already being removed,
  // ENODEV; uevent: EINVAL unknown action; vendor attributes: the vendor's.
  Result<void> Write(std::string_view path, std::string_view data) const;

  Registry& registry() const { return registry_; }

 private:
  Registry& registry_;
  const TreeOptions options_;
};

}  // namespace umdev::sysfs
