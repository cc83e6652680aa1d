// FuseServer: mounts a Tree at a directory with libfuse3, so plain tools
// (cat, echo >, ls -l, readlink, mdevctl) use it as they use /sys.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"
#include "umdev/sysfs/tree.h"

struct fuse;

namespace umdev::sysfs {

struct MountContext;  // What the FUSE callbacks see.

struct FuseOptions {
  // Requests served at once; a slow one (a removal waiting for the device's
  // user) holds only its own thread.
  unsigned threads = 4;
};

// Start() and Stop() from one thread (the daemon's main thread); requests
// are served on the server's own worker threads.
class FuseServer {
 public:
  FuseServer(const Tree& tree, std::string mountpoint, FuseOptions options = {});
  ~FuseServer();
  FuseServer(const FuseServer&) = delete;
  FuseServer& operator=(const FuseServer&) = delete;

  // Creates the mount point if missing (clearing a dead mount left by a
  // crashed daemon), mounts and starts the workers. Errors: ENODEV/EACCES/
  // EPERM when FUSE cannot be used here (/dev/fuse, permissions); the
  // mount's errno.
  Result<void> Start();
  // Stops the workers, detaches the mount (lazily: a busy mount point or a
  // lazy unmount by someone else does not block) and closes the FUSE
  // connection, which fails whatever users still hold with ENOTCONN.
  // Waits only for requests being served (bounded by the registry), never
  // for a process using the mount. Idempotent.
  void Stop();

  const std::string& mountpoint() const { return mountpoint_; }

 private:
  void Work();

  const std::unique_ptr<MountContext> context_;
  const std::string mountpoint_;
  const FuseOptions options_;
  struct fuse* fuse_ = nullptr;
  bool mounted_ = false;
  UniqueFd wake_;  // eventfd: Stop() wakes every worker's poll().
  std::vector<std::thread> workers_;
};

}  // namespace umdev::sysfs
