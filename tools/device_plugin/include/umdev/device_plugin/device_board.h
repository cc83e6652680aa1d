// DeviceBoard: each resource's current devices, published by the plugin's
// poll loop and read by the gRPC threads serving kubelet (ListAndWatch
// waits on it for changes).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "umdev/common/mutex.h"
#include "umdev/device_plugin/inventory.h"

namespace umdev::device_plugin {

// Thread-safe: one publisher (the poll loop), any number of readers.
class DeviceBoard {
 public:
  explicit DeviceBoard(size_t resources);

  struct Snapshot {
    uint64_t version = 0;  // Bumped by each publish that changes something.
    std::vector<DeviceState> devices;
  };

  // Replaces |resource|'s devices; readers waiting see the change.
  void Publish(size_t resource, std::vector<DeviceState> devices) UMDEV_EXCLUDES(mu_);
  Snapshot Get(size_t resource) const UMDEV_EXCLUDES(mu_);
  // The devices once their version differs from |seen|; nullopt after
  // |timeout| or once the board is closed (so a caller can check whether
  // its stream is cancelled, then wait again).
  std::optional<Snapshot> WaitForChange(size_t resource, uint64_t seen,
                                        std::chrono::milliseconds timeout) UMDEV_EXCLUDES(mu_);
  // Wakes every waiter for good: the plugin is shutting down.
  void Close() UMDEV_EXCLUDES(mu_);
  bool closed() const UMDEV_EXCLUDES(mu_);

 private:
  mutable Mutex mu_;
  CondVar changed_;
  std::vector<Snapshot> boards_ UMDEV_GUARDED_BY(mu_);
  bool closed_ UMDEV_GUARDED_BY(mu_) = false;
};

}  // namespace umdev::device_plugin
