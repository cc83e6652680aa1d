// FakeMigration: a test vendor's migration v2 and DMA logging, with a byte
// stream built from the device's state and hooks to inject failures.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <utility>
#include <vector>

#include "umdev/common/mutex.h"
#include "umdev/mdev_core/device_ops.h"

namespace umdev::testing {

// The saving stream is a header ("UMDEVMIG", u32 payload length) and the
// payload |save| returns, snapshotted on entering STOP_COPY; PRE_COPY states
// have no data yet (ReadData: ENOMSG, the uapi's temporary end of stream).
// Leaving RESUMING loads what was written through |load|; a malformed stream
// fails the arc with EINVAL and leaves the device in ERROR. Thread-safe.
class FakeMigration final : public MigrationOps, public DirtyLogOps {
 public:
  using Arc = std::pair<vfio_device_mig_state, vfio_device_mig_state>;

  FakeMigration(uint64_t flags, std::function<std::vector<std::byte>()> save,
                std::function<void(std::span<const std::byte>)> load)
      : flags_(flags), save_(std::move(save)), load_(std::move(load)) {}

  // MigrationOps.
  uint64_t flags() const override { return flags_; }
  vfio_device_mig_state GetState() override;
  // Errors: EINVAL an arc the uapi does not list for |flags| (counted in
  // illegal_arcs()); an injected failure.
  Result<void> SetState(vfio_device_mig_state next) override;
  Result<uint64_t> GetDataSize() override;
  Result<size_t> ReadData(std::span<std::byte> out) override;
  Result<size_t> WriteData(std::span<const std::byte> data) override;

  // DirtyLogOps. Start while started: EBUSY; report while stopped: EINVAL.
  Result<void> Start(std::span<const SparseMmapArea> ranges, uint64_t page_size) override;
  Result<void> Stop() override;
  Result<std::vector<uint64_t>> ReadAndClear(uint64_t iova, uint64_t size,
                                             uint64_t page_size) override;

  // What the vendor's reset or close does: back to |state_after_reset|, any
  // data session dropped.
  void OnReset();
  void set_state_after_reset(vfio_device_mig_state state);

  // The next arc into |to| fails with |code|, leaving the device in ERROR.
  void FailNextArcTo(vfio_device_mig_state to, int code);
  // Runs at the start of each SetState(), with no lock held.
  void set_arc_hook(std::function<void()> hook);
  std::vector<Arc> arcs() const;
  int illegal_arcs() const { return illegal_arcs_; }
  int max_concurrent_arcs() const { return max_concurrent_arcs_; }
  // OnReset() calls made while an arc was running.
  int resets_during_arcs() const { return resets_during_arcs_; }

  // The device wrote guest memory at |iova| (logged while logging is on).
  void MarkDirty(uint64_t iova);
  bool logging() const;
  std::vector<SparseMmapArea> logged_ranges() const;
  // Reports come back one word short (a broken vendor).
  void set_short_reports(bool short_reports) { short_reports_ = short_reports; }

 private:
  const uint64_t flags_;
  const std::function<std::vector<std::byte>()> save_;
  const std::function<void(std::span<const std::byte>)> load_;
  std::atomic<int> arcs_running_{0};
  std::atomic<int> max_concurrent_arcs_{0};
  std::atomic<int> illegal_arcs_{0};
  std::atomic<bool> short_reports_{false};
  std::atomic<int> resets_during_arcs_{0};
  mutable Mutex mu_;
  vfio_device_mig_state state_ UMDEV_GUARDED_BY(mu_) = VFIO_DEVICE_STATE_RUNNING;
  vfio_device_mig_state state_after_reset_ UMDEV_GUARDED_BY(mu_) = VFIO_DEVICE_STATE_RUNNING;
  std::vector<std::byte> outgoing_ UMDEV_GUARDED_BY(mu_);
  size_t outgoing_pos_ UMDEV_GUARDED_BY(mu_) = 0;
  std::vector<std::byte> incoming_ UMDEV_GUARDED_BY(mu_);
  std::optional<std::pair<vfio_device_mig_state, int>> fail_next_ UMDEV_GUARDED_BY(mu_);
  std::shared_ptr<std::function<void()>> arc_hook_ UMDEV_GUARDED_BY(mu_);
  std::vector<Arc> arcs_ UMDEV_GUARDED_BY(mu_);
  bool logging_ UMDEV_GUARDED_BY(mu_) = false;
  uint64_t log_page_size_ UMDEV_GUARDED_BY(mu_) = 0;
  std::vector<SparseMmapArea> log_ranges_ UMDEV_GUARDED_BY(mu_);
  std::set<uint64_t> dirty_pages_ UMDEV_GUARDED_BY(mu_);  // Start addresses, log_page_size_.
};

}  // namespace umdev::testing
