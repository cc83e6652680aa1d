// GpuDevice: one slice of an accelerator as a PCI function (docs/gpu.md, "The
// guest-visible device"): BAR0 registers with the MSI-X table, BAR2 the
// slice's memory (mmappable), and a command ring in guest memory.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "umdev/common/mapping.h"
#include "umdev/common/mutex.h"
#include "umdev/common/unique_fd.h"
#include "umdev/irq/device_irqs.h"
#include "umdev/irq/virqfd.h"
#include "umdev/mdev_core/dma_access.h"
#include "umdev/mdev_core/device_ops.h"
#include "umdev/mdev_core/pci_config_space.h"
#include "umdev/vendor/gpu/command_queue.h"
#include "umdev/vendor/gpu/doorbell_poller.h"
#include "umdev/vendor/gpu/queue_runner.h"
#include "umdev/vendor/gpu/engine.h"
#include "umdev/vendor/gpu/gpu_regs.h"

namespace umdev::vendor::gpu {

class GuestPinCache;

struct GpuDeviceOptions {
  uint16_t vendor_id = regs::kDefaultVendorId;
  uint16_t device_id = regs::kDefaultDeviceId;
  uint32_t compute_share_permille = 1000;
  bool builtin_kernels_only = false;  // The CPU engine: CAPS says so.
  // Guest pages kept pinned between commands (GuestPinCache): 64 MiB.
  uint64_t pin_cache_pages = 16384;
  // Polls the device's doorbell page (BAR4); null or a spin of 0: no page.
  // The device keeps it alive.
  std::shared_ptr<DoorbellPoller> doorbell_poller;
};

// Per-instance statistics (BAR0 STAT_* and the device attributes).
struct GpuDeviceStats {
  std::chrono::nanoseconds busy{0};
  uint64_t commands = 0;
  uint64_t bytes = 0;
  uint64_t errors = 0;
};

// What PRE_COPY has left to send (VFIO_MIG_GET_PRECOPY_INFO's fields).
struct GpuPrecopyInfo {
  uint64_t initial_bytes = 0;  // Never sent in this session (header included).
  uint64_t dirty_bytes = 0;    // Sent, then changed.
};

// Thread-safe: the transport calls DeviceOps, MigrationOps (and the dma_unmap
// listener), the runner's thread calls RunOne(). Lock order: mig_mu_ (the
// migration session) before exec_mu_ (the slice and pins; held while a
// command touches them) before mu_ (registers). Guest memory is never copied
// with either of the last two held except through pinned pages.
class GpuDevice final : public DeviceOps,
                        public CommandQueue,
                        private DmaUnmapListener,
                        private MigrationOps {
 public:
  // Attaches to |runner| (which must outlive the device) with the options'
  // share (a refusal: see attach_result()). |resample_loop| may be null
  // (INTx resample eventfds: ENOTTY).
  GpuDevice(GpuDeviceOptions options, std::unique_ptr<Slice> slice, DmaAccess& dma,
            QueueRunner& runner, irq::VirqfdLoop* resample_loop,
            std::function<void()> on_destroy = {});
  ~GpuDevice() override;
  GpuDevice(const GpuDevice&) = delete;
  GpuDevice& operator=(const GpuDevice&) = delete;

  // DeviceOps.
  void Close() override;
  DeviceInfo GetInfo() override;
  Result<RegionInfo> GetRegionInfo(uint32_t index) override;
  Result<size_t> RegionRead(uint32_t index, uint64_t offset, std::span<std::byte> out) override;
  Result<size_t> RegionWrite(uint32_t index, uint64_t offset,
                             std::span<const std::byte> data) override;
  Result<IrqInfo> GetIrqInfo(uint32_t index) override;
  Result<void> SetIrqs(IrqSet& set) override;
  Result<void> Reset() override;
  void Request(unsigned count) override;
  bool pins_pages() const override { return true; }
  DmaUnmapListener* dma_unmap_listener() override { return this; }
  MigrationOps* migration() override { return this; }
  // busy_ns, commands, bytes, errors (the device's counts, as in BAR0),
  // timeouts (DISPATCHes that ran past the engine's timeout, this tenant),
  // and the runner's preempted, yielded, throttled (read-only).
  std::vector<DeviceAttribute> Attributes() override;
  Result<std::string> ReadAttribute(std::string_view name) override;

  // DISPATCHes of one tenant that may run past the engine's timeout: each
  // costs the whole parent a device reset (and on llvmpipe threads that go
  // on spinning), so after this many its DISPATCH is refused with EIO until
  // the VMM closes the device (a guest reset does not clear it).
  static constexpr uint32_t kMaxRunawayKernels = 2;

  // CommandQueue: one ring entry, or one piece of a long COPY or FILL.
  std::optional<CommandCost> RunOne() override;

  GpuDeviceStats stats() const UMDEV_EXCLUDES(mu_);
  // Why the runner refused the queue, if it did: such a device never runs a
  // command, and its creator destroys it and reports the error.
  Result<void> attach_result() const {
    if (attach_error_) return std::unexpected(*attach_error_);
    return {};
  }
  // dma_unmap notifications received so far (tests synchronise on it).
  uint64_t unmap_notices() const { return unmap_notices_.load(); }
  // Errors: EINVAL not in PRE_COPY or PRE_COPY_P2P (as the kernel's ioctl).
  Result<GpuPrecopyInfo> PrecopyInfo() UMDEV_EXCLUDES(mig_mu_, exec_mu_);
  // Whether a stopped migration state holds the ring: no entry starts (tests
  // synchronise on it).
  bool quiesced() const UMDEV_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    return quiesced_;
  }
  uint64_t bar2_size() const { return bar2_size_; }
  bool has_doorbell_page() const { return doorbell_page_.valid(); }
  const irq::DeviceIrqs& irqs() const { return irqs_; }
  // For tests: waits until the ring is idle (HEAD == TAIL, stopped on an
  // error, or disabled) and no entry runs; false after |timeout|.
  bool WaitIdle(std::chrono::milliseconds timeout = std::chrono::seconds(30))
      UMDEV_EXCLUDES(mu_);

 private:
  // Registers (gpu_device.cc).
  Result<size_t> Bar0Access(uint64_t offset, std::span<std::byte> read,
                            std::span<const std::byte> write) UMDEV_EXCLUDES(mu_);
  uint32_t ReadRegister(uint32_t offset) const UMDEV_REQUIRES(mu_);
  // Returns whether the queue should be kicked.
  bool WriteRegister(uint32_t offset, uint32_t value, bool& reset) UMDEV_REQUIRES(mu_);
  Result<size_t> Bar2Access(uint64_t offset, std::span<std::byte> read,
                            std::span<const std::byte> write) UMDEV_EXCLUDES(mu_);
  // The doorbell page (gpu_doorbell.cc): made at construction when the
  // options have a poller; trapped accesses to BAR4.
  void CreateDoorbellPage();
  Result<size_t> DoorbellAccess(uint64_t offset, std::span<std::byte> read,
                                std::span<const std::byte> write) UMDEV_EXCLUDES(mu_);
  // QUEUE_TAIL as the ring sees it: DB_TAIL under a polled tail.
  uint32_t TailNow() const UMDEV_REQUIRES(mu_);
  void StoreDoorbellTail(uint32_t value) UMDEV_REQUIRES(mu_);
  void RaiseCause(uint32_t cause) UMDEV_REQUIRES(mu_);
  void UpdateIntxLine() UMDEV_REQUIRES(mu_);
  void SetError(int code, uint32_t index, bool skippable) UMDEV_REQUIRES(mu_);
  void ResetRegisters() UMDEV_REQUIRES(mu_);
  void DropPrefetch() UMDEV_REQUIRES(mu_) {
    prefetched_.reset();
    ++ring_epoch_;
  }
  // Stops the queue, discards the entry in flight and zeroes the slice.
  void ResetFunction(bool config_too) UMDEV_EXCLUDES(exec_mu_, mu_);

  // MigrationOps (gpu_migration.cc; docs/gpu-migration.md).
  uint64_t flags() const override;
  vfio_device_mig_state GetState() override UMDEV_EXCLUDES(mig_mu_);
  Result<void> SetState(vfio_device_mig_state next) override UMDEV_EXCLUDES(mig_mu_);
  Result<uint64_t> GetDataSize() override;
  Result<size_t> ReadData(std::span<std::byte> out) override UMDEV_EXCLUDES(mig_mu_);
  // PrecopyInfo() in the core's terms.
  Result<umdev::PrecopyInfo> GetPrecopyInfo() override UMDEV_EXCLUDES(mig_mu_, exec_mu_);
  Result<size_t> WriteData(std::span<const std::byte> data) override UMDEV_EXCLUDES(mig_mu_);
  // Stops taking ring entries and waits for the one in flight to finish.
  void Quiesce() UMDEV_EXCLUDES(mu_);
  void Unquiesce() UMDEV_EXCLUDES(mu_);
  // Ends any session and returns to RUNNING (reset and close).
  void DropMigration() UMDEV_EXCLUDES(mig_mu_, mu_);
  // Appends the next record of the saving stream to saving_.out; false when
  // the current pass (or the whole stream) has nothing more.
  bool ProduceRecord() UMDEV_REQUIRES(mig_mu_) UMDEV_EXCLUDES(exec_mu_, mu_);
  std::vector<std::byte> EncodeDeviceState() UMDEV_REQUIRES(mig_mu_) UMDEV_EXCLUDES(mu_);
  // Consumes complete records of resuming_.in. Errors: EINVAL malformed.
  Result<void> ConsumeRecords() UMDEV_REQUIRES(mig_mu_) UMDEV_EXCLUDES(exec_mu_, mu_);
  Result<void> LoadDeviceState(std::span<const std::byte> payload) UMDEV_REQUIRES(mig_mu_)
      UMDEV_EXCLUDES(mu_);
  void MarkSliceDirty(uint64_t offset, uint64_t size) UMDEV_REQUIRES(exec_mu_);

  // Commands (gpu_commands.cc). A COPY or FILL runs in pieces of at most
  // kPieceBytes from |done| bytes in; each returns the bytes this call moved
  // and sets |finished| when the command is complete.
  static constexpr uint64_t kPieceBytes = uint64_t{1} << 20;
  // RunOne(), or with |finish_in_flight| the next piece of the entry in
  // flight even while quiesced (Quiesce() completes it).
  std::optional<CommandCost> RunPiece(bool finish_in_flight) UMDEV_EXCLUDES(mu_, exec_mu_);
  Result<uint64_t> Execute(const std::byte* entry, uint64_t generation, uint64_t done,
                           bool& finished) UMDEV_EXCLUDES(mu_);
  // Reads the entry at |iova| into |current| with the |count| - 1 after it
  // in the same read, kept in prefetched_ unless a drop came after
  // |ring_epoch|. Errors: EFAULT the entry itself is unreadable.
  struct EntryInFlight;
  Result<uint64_t> ReadEntries(uint64_t iova, uint32_t count, EntryInFlight& current,
                               uint64_t ring_epoch) UMDEV_EXCLUDES(mu_);
  Result<uint64_t> ExecuteCopy(const std::byte* entry, uint64_t generation, uint64_t done,
                               bool& finished) UMDEV_EXCLUDES(mu_);
  Result<uint64_t> ExecuteFill(const std::byte* entry, uint64_t generation, uint64_t done,
                               bool& finished) UMDEV_EXCLUDES(mu_);
  // Marks what the entry may have written, done or not: a migration re-sends it.
  void MarkEntryDirty(const std::byte* entry, uint64_t done, uint64_t moved, bool failed)
      UMDEV_EXCLUDES(mu_, exec_mu_);
  Result<uint64_t> ExecuteDispatch(const std::byte* entry, uint64_t generation)
      UMDEV_EXCLUDES(mu_);
  Result<void> CopyGuest(uint64_t iova, uint64_t offset, uint64_t size, bool to_slice,
                         uint64_t generation) UMDEV_EXCLUDES(mu_);
  // EFAULT when [iova, iova + size) was unmapped since the entry started.
  Result<void> CheckNotUnmapped(uint64_t iova, uint64_t size) UMDEV_EXCLUDES(unmap_mu_);
  // Fails with ECANCELED when a reset came after |generation| (held exec_mu_).
  Result<void> CheckGeneration(uint64_t generation) UMDEV_EXCLUDES(mu_);

  // DmaUnmapListener: drops the pin of a chunk being copied, if any.
  void OnDmaUnmap(uint64_t iova, uint64_t size) override;
  void OnPinsRevoked(uint64_t iova, uint64_t size) override;

  const GpuDeviceOptions options_;
  // Runs last in the destructor; what it captures (the parent's runner and
  // interrupt loop) outlives every member below.
  std::function<void()> on_destroy_;
  std::unique_ptr<Slice> slice_;  // Freed before on_destroy_ runs.
  const uint64_t bar2_size_;
  DmaAccess& dma_;
  // The doorbell page: a sealed 4 KiB memfd (the client cannot truncate it)
  // and the daemon's mapping of it; the watch (reset first) polls it.
  UniqueFd doorbell_fd_;
  Mapping doorbell_page_;
  std::unique_ptr<DoorbellPoller::Watch> doorbell_watch_;
  irq::DeviceIrqs irqs_;

  // The migration session: one saving or resuming stream at a time.
  struct SavingStream {
    std::vector<std::byte> out;  // Encoded, not yet read.
    size_t out_pos = 0;
    std::vector<uint64_t> sent_hash;  // Per page; valid where sent[page].
    std::vector<bool> sent;
    uint64_t scan_page = 0;   // Where the current pass goes on.
    bool pass_ended = false;  // Reported once with 0 bytes.
    bool final = false;       // STOP_COPY: device state and END follow the pages.
    bool done = false;        // END produced.
  };
  struct ResumingStream {
    std::vector<std::byte> in;  // An incomplete header or record.
    bool header_seen = false;
    bool device_seen = false;
    bool end_seen = false;
    std::vector<std::byte> device;  // The DEVICE record, loaded at the end.
    std::optional<Error> broken;  // The first malformed part.
  };
  Mutex mig_mu_;
  vfio_device_mig_state mig_state_ UMDEV_GUARDED_BY(mig_mu_) = VFIO_DEVICE_STATE_RUNNING;
  std::optional<SavingStream> saving_ UMDEV_GUARDED_BY(mig_mu_);
  std::optional<ResumingStream> resuming_ UMDEV_GUARDED_BY(mig_mu_);

  Mutex exec_mu_;
  // Pages the ring or a trapped BAR2 write changed since the migration read
  // them (one per page; the mmap is caught by the hash comparison).
  std::vector<bool> dirty_pages_ UMDEV_GUARDED_BY(exec_mu_);
  // Guest pages pinned for COPY, kept between commands until the guest
  // unmaps them or the function is reset.
  std::unique_ptr<GuestPinCache> pin_cache_ UMDEV_PT_GUARDED_BY(exec_mu_);
  // IOVA ranges unmapped since the current entry started: its later chunks
  // must not pin them again in the window before the backend removes them.
  Mutex unmap_mu_;  // A leaf: taken with nothing else, or inside exec_mu_.
  std::vector<std::pair<uint64_t, uint64_t>> unmapped_ UMDEV_GUARDED_BY(unmap_mu_);
  std::atomic<uint64_t> unmap_notices_{0};
  // DISPATCHes of this tenant that ran past the engine's timeout.
  std::atomic<uint32_t> runaway_kernels_{0};
  // The SPIR-V of the DISPATCH being run, read from the slice: only RunOne
  // (one thread at a time) touches it; kept to spare an allocation each.
  std::vector<uint32_t> dispatch_module_;

  mutable Mutex mu_;
  CondVar cv_;  // An entry finished or the queue changed.
  PciConfigSpace config_ UMDEV_GUARDED_BY(mu_);
  std::vector<std::byte> msix_table_ UMDEV_GUARDED_BY(mu_);
  uint64_t queue_base_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t queue_size_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t queue_ctrl_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t head_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t tail_ UMDEV_GUARDED_BY(mu_) = 0;
  uint64_t fence_done_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t int_status_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t int_mask_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t error_code_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t error_index_ UMDEV_GUARDED_BY(mu_) = 0;
  bool error_skippable_ UMDEV_GUARDED_BY(mu_) = false;
  bool running_ UMDEV_GUARDED_BY(mu_) = false;
  // The entry at HEAD while a COPY or FILL is part done: its bytes as read
  // when it started (the guest may rewrite the slot meanwhile) and how far
  // it got. Dropped by a reset, an error and any write of the queue
  // registers (the entry then starts over).
  struct EntryInFlight {
    uint32_t index = 0;
    uint64_t generation = 0;
    std::array<std::byte, regs::kEntrySize> bytes{};
    uint64_t done = 0;
  };
  std::optional<EntryInFlight> in_flight_ UMDEV_GUARDED_BY(mu_);
  // Entries read ahead of HEAD with one DMA read (published ones only: below
  // TAIL), so that a ring costs one read per kPrefetchEntries entries, not
  // one per entry: one message round trip instead of eight for a client
  // without shared memory. Dropped (DropPrefetch) by everything that
  // reprograms or stops the queue; ring_epoch_ counts the drops, so that a
  // read that raced one is not kept.
  static constexpr uint32_t kPrefetchEntries = 8;
  struct Prefetched {
    uint32_t first = 0;  // The index of bytes[0].
    uint32_t count = 0;
    std::array<std::byte, kPrefetchEntries * regs::kEntrySize> bytes{};
  };
  std::optional<Prefetched> prefetched_ UMDEV_GUARDED_BY(mu_);
  uint64_t ring_epoch_ UMDEV_GUARDED_BY(mu_) = 0;
  // A stopped migration state: RunOne() takes no entry.
  bool quiesced_ UMDEV_GUARDED_BY(mu_) = false;
  // Bumped by every reset: an entry of an older generation leaves no trace.
  uint64_t generation_ UMDEV_GUARDED_BY(mu_) = 0;
  GpuDeviceStats stats_ UMDEV_GUARDED_BY(mu_);

  // Last: detached (waiting for a RunOne in progress) before the rest goes.
  std::unique_ptr<QueueAttachment> attachment_;
  std::optional<Error> attach_error_;
};

}  // namespace umdev::vendor::gpu
