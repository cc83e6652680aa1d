#include "umdev/device_plugin/device_board.h"

#include <utility>

namespace umdev::device_plugin {

DeviceBoard::DeviceBoard(size_t resources) : boards_(resources) {}

void DeviceBoard::Publish(size_t resource, std::vector<DeviceState> devices) {
  MutexLock lock(mu_);
  Snapshot& board = boards_.at(resource);
  if (board.version != 0 && board.devices == devices) return;
  board.devices = std::move(devices);
  ++board.version;
  changed_.NotifyAll();
}

DeviceBoard::Snapshot DeviceBoard::Get(size_t resource) const {
  MutexLock lock(mu_);
  return boards_.at(resource);
}

std::optional<DeviceBoard::Snapshot> DeviceBoard::WaitForChange(size_t resource, uint64_t seen,
                                                                std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock lock(mu_);
  while (!closed_ && boards_.at(resource).version == seen) {
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) return std::nullopt;
    changed_.WaitFor(mu_, left);
  }
  if (closed_) return std::nullopt;
  return boards_.at(resource);
}

void DeviceBoard::Close() {
  MutexLock lock(mu_);
  closed_ = true;
  changed_.NotifyAll();
}

bool DeviceBoard::closed() const {
  MutexLock lock(mu_);
  return closed_;
}

}  // namespace umdev::device_plugin
