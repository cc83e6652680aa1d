// Device and DeviceFile: the core's side of one mdev instance (kernel:
// vfio_device) and a user's open handle on it (a device fd).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/common/uuid.h"
#include "umdev/mdev_core/container.h"
#include "umdev/mdev_core/device_ops.h"
#include "umdev/mdev_core/dma_access.h"
#include "umdev/mdev_core/vm.h"

namespace umdev {

class DeviceFile;
class Group;

// Owns the vendor's DeviceOps and mediates every call to it: user calls run
// only while the device is registered, DMA goes to the backend of whoever has
// it open, and removal waits for users (asking them to let go) before the
// vendor object is destroyed. Thread-safe.
class Device final : public DmaAccess, private DmaUnmapListener,
                     public std::enable_shared_from_this<Device> {
 public:
  // An mdev instance, named by its UUID.
  explicit Device(Uuid uuid, VmPolicy vm_policy = {}, std::shared_ptr<VmClaims> vm_claims = nullptr)
      : uuid_(uuid), name_(uuid.ToString()), vm_(vm_policy, std::move(vm_claims)) {}
  // A device a bus driver registers (Registry::RegisterDevice), named by
  // its bus address; its uuid() is nil.
  explicit Device(std::string name) : name_(std::move(name)), vm_(VmPolicy{}, nullptr) {}
  ~Device() override;

  const Uuid& uuid() const { return uuid_; }
  // The name VFIO_GROUP_GET_DEVICE_FD matches: an mdev's UUID string, a
  // bus device's address.
  const std::string& name() const { return name_; }

  // Installs the vendor object after Probe(). Errors: EINVAL the device pins
  // pages but has no dma_unmap listener (the kernel's contract for emulated
  // devices); |ops| is then destroyed. Devices that do not declare pinning
  // are still refused pins (EINVAL) at PinPages() if they lack a listener.
  Result<void> Bind(std::unique_ptr<DeviceOps> ops) UMDEV_EXCLUDES(mu_);

  // Removal. Refuses new opens, asks open users to release (DeviceOps::Request,
  // about every |slice|) for at most |bound|, then revokes their handles
  // (their calls fail with ENODEV), waits for calls in flight, closes the
  // device on their behalf and destroys the vendor object. Never returns
  // while a vendor call is running.
  void Unregister(std::chrono::milliseconds bound, std::chrono::milliseconds slice)
      UMDEV_EXCLUDES(mu_);

  bool is_open() const UMDEV_EXCLUDES(mu_);

  // What an operator's view shows of the device (umdevctl top, stats).
  struct Usage {
    bool open = false;
    uint64_t locked_bytes = 0;  // Pinned in the open user's address space.
    // The migration state, for devices that migrate.
    std::optional<vfio_device_mig_state> migration_state;
    // Migration data moved through the core since the device was created
    // (the kernel's migration debugfs view).
    uint64_t migration_bytes_saved = 0;
    uint64_t migration_bytes_loaded = 0;
  };
  // Errors: ENODEV removed or being removed.
  Result<Usage> CurrentUsage() UMDEV_EXCLUDES(mu_);

  // The VM latched by the first open (null while closed or without a VM).
  std::shared_ptr<const Vm> vm() const { return vm_.latched(); }

  // The core's VM attributes (DeviceVmState) followed by the vendor's
  // (DeviceOps::Attributes and friends), whether or not the device is open.
  // Errors: ENODEV removed or being removed; the vendor's. WriteAttribute
  // strips one trailing newline from |value|.
  Result<std::vector<DeviceAttribute>> Attributes() UMDEV_EXCLUDES(mu_);
  Result<std::string> ReadAttribute(std::string_view name) UMDEV_EXCLUDES(mu_);
  Result<void> WriteAttribute(std::string_view name, std::string_view value) UMDEV_EXCLUDES(mu_);
  // Set when the backend revoked this device's pins; cleared by a reset.
  bool is_broken() const UMDEV_EXCLUDES(mu_);
  // A bus driver's word that the device could not be reset between two
  // users, so it may hold the last one's state (vfio-pci's needs_reset):
  // why, or empty once a reset worked. Listed with the device's status.
  void SetNeedsReset(std::string why) UMDEV_EXCLUDES(mu_);
  std::string needs_reset() const UMDEV_EXCLUDES(mu_);

  // The core attribute busy_poll_us (RW, 0 .. kMaxBusyPollUs, default 0): how
  // long the thread serving the device's client keeps polling its
  // connection after a message before it sleeps, for latency-critical
  // devices (the socket option SO_BUSY_POLL's idea). Shared with that
  // thread, which reads it each time it would sleep, so a change applies at
  // once. Any thread.
  static constexpr uint32_t kMaxBusyPollUs = 100'000;
  std::shared_ptr<const std::atomic<uint32_t>> busy_poll_us() const { return busy_poll_us_; }

  // DmaAccess, for the vendor.
  Result<std::vector<void*>> PinPages(uint64_t iova, int npage, uint32_t prot) override;
  void UnpinPages(uint64_t iova, int npage) override;
  Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) override;
  Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) override;

 private:
  friend class DeviceFile;
  friend class Group;
  friend class GroupFile;
  friend Result<std::unique_ptr<DeviceFile>> OpenDeviceCdev(
      const std::shared_ptr<Group>&, const std::shared_ptr<AddressSpace>&,
      std::shared_ptr<const Vm>);

  // A user opens the device with |iommu| as its DMA target. The first open
  // latches |vm| (what was set on the group or device file; later opens and
  // later changes do not replace it), enforces the VM policy, attaches the
  // dma_unmap listener and calls DeviceOps::Open().
  // Errors: ENODEV removed or being removed; EBUSY open with another backend;
  // DeviceVmState::Latch's; the vendor's Open() errors.
  // Returns the generation the new handle belongs to.
  Result<uint64_t> OpenFor(std::shared_ptr<IommuBackend> iommu, std::shared_ptr<const Vm> vm)
      UMDEV_EXCLUDES(mu_);
  void CloseFor(uint64_t generation) UMDEV_EXCLUDES(mu_);
  bool is_removing() const UMDEV_EXCLUDES(mu_);
  // Runs |fn| on the vendor object for a handle of |generation|. Errors:
  // ENODEV revoked or removed; EIO broken (pins revoked) unless |allow_broken|.
  Result<void> Call(uint64_t generation, const std::function<Result<void>(DeviceOps&)>& fn,
                    bool allow_broken = false) UMDEV_EXCLUDES(mu_);
  // Last close: DeviceOps::Close() and listener detach, run without mu_.
  void CloseDevice(DeviceOps& ops, const std::shared_ptr<IommuBackend>& iommu,
                   bool has_listener) UMDEV_EXCLUDES(mu_);
  void WaitIdleLocked() UMDEV_REQUIRES(mu_);
  // One migration transition, migration data transfer or reset at a time
  // (the kernel drivers' state mutex), held across vendor calls without
  // holding mu_. Waiting for the turn does not count as a call in flight.
  void AcquireMigrationTurn() UMDEV_EXCLUDES(mu_);
  void ReleaseMigrationTurn() UMDEV_EXCLUDES(mu_);
  // Holds the migration turn for one scope; used by DeviceFile's callers' threads.
  class MigrationTurn {
   public:
    explicit MigrationTurn(Device& device) : device_(device) { device_.AcquireMigrationTurn(); }
    ~MigrationTurn() { device_.ReleaseMigrationTurn(); }
    MigrationTurn(const MigrationTurn&) = delete;
    MigrationTurn& operator=(const MigrationTurn&) = delete;

   private:
    Device& device_;
  };
  // Runs |fn| on the vendor object while it is registered, open or not.
  // Errors: ENODEV removed or being removed.
  Result<void> CallRegistered(const std::function<Result<void>(DeviceOps&)>& fn)
      UMDEV_EXCLUDES(mu_);

  // migration/state, migration/bytes_saved, migration/bytes_loaded: read-only
  // core attributes of devices that migrate (device_migration.cc).
  static constexpr std::array<std::string_view, 3> kMigrationAttributes = {
      "migration/state", "migration/bytes_saved", "migration/bytes_loaded"};
  static bool IsMigrationAttribute(std::string_view name);
  // Errors: ENODEV removed; ENOENT the device does not migrate.
  Result<std::string> ReadMigrationAttribute(std::string_view name) UMDEV_EXCLUDES(mu_);

  // DmaUnmapListener, forwarding to the vendor's.
  void OnDmaUnmap(uint64_t iova, uint64_t size) override;
  void OnPinsRevoked(uint64_t iova, uint64_t size) override;

  static constexpr std::string_view kBusyPollAttribute = "busy_poll_us";
  Result<void> WriteBusyPoll(std::string_view value);

  const Uuid uuid_;
  const std::string name_;
  DeviceVmState vm_;  // Latched and released inside open/close transitions.
  const std::shared_ptr<std::atomic<uint32_t>> busy_poll_us_ =
      std::make_shared<std::atomic<uint32_t>>(0);
  mutable Mutex mu_;
  CondVar changed_;
  std::unique_ptr<DeviceOps> ops_ UMDEV_GUARDED_BY(mu_);
  DmaUnmapListener* vendor_listener_ UMDEV_GUARDED_BY(mu_) = nullptr;  // Owned by ops_.
  std::shared_ptr<IommuBackend> iommu_ UMDEV_GUARDED_BY(mu_);  // Set while open.
  unsigned open_count_ UMDEV_GUARDED_BY(mu_) = 0;
  unsigned calls_in_flight_ UMDEV_GUARDED_BY(mu_) = 0;
  // Bumped at each revocation so handles from before it know they are stale.
  uint64_t generation_ UMDEV_GUARDED_BY(mu_) = 0;
  // An Open() or Close() of the vendor object is running; opens wait.
  bool transition_ UMDEV_GUARDED_BY(mu_) = false;
  bool removing_ UMDEV_GUARDED_BY(mu_) = false;
  bool broken_ UMDEV_GUARDED_BY(mu_) = false;
  std::string needs_reset_ UMDEV_GUARDED_BY(mu_);
  bool migration_turn_taken_ UMDEV_GUARDED_BY(mu_) = false;
  uint64_t migration_bytes_saved_ UMDEV_GUARDED_BY(mu_) = 0;
  uint64_t migration_bytes_loaded_ UMDEV_GUARDED_BY(mu_) = 0;
};

// An open device (a device fd). Closing it (destruction) is the last-close
// when it is the last one. Thread-safe.
class DeviceFile {
 public:
  ~DeviceFile();
  DeviceFile(const DeviceFile&) = delete;
  DeviceFile& operator=(const DeviceFile&) = delete;

  Device& device() const { return *device_; }

  // The VFIO device ioctls. Errors: ENODEV the device was removed under this
  // handle; EIO the device is broken; EINVAL bad index, or an IrqSet that
  // does not fit the IRQ's info; the vendor's own.
  Result<DeviceInfo> GetInfo();
  Result<RegionInfo> GetRegionInfo(uint32_t index);
  Result<size_t> RegionRead(uint32_t index, uint64_t offset, std::span<std::byte> out);
  Result<size_t> RegionWrite(uint32_t index, uint64_t offset, std::span<const std::byte> data);
  Result<IrqInfo> GetIrqInfo(uint32_t index);
  Result<void> SetIrqs(IrqSet& set);
  // Also takes the migration turn. The kernel expects a reset to bring a
  // migratable device back to RUNNING, ERROR included (uapi vfio.h, "any ->
  // ERROR"); the core forwards it and afterwards reports whatever state the
  // vendor's GetState() says.
  Result<void> Reset();

  // Migration v2 (VFIO_DEVICE_FEATURE_MIGRATION, _MIG_DEVICE_STATE,
  // _MIG_DATA_SIZE; vfio-user MIG_DATA_READ/WRITE). Errors besides ENODEV
  // and EIO above: ENOTTY the device has no MigrationOps (kernel
  // vfio_ioctl_device_feature_*), the vendor's own.
  Result<uint64_t> MigrationFlags();
  Result<vfio_device_mig_state> GetMigrationState();
  // Walks the arcs NextMigrationState() picks until |target|, one transition
  // per device at a time; returns the state reached. Errors: EINVAL |target|
  // unsupported or unreachable (ERROR, a state the flags lack, STOP_COPY ->
  // PRE_COPY*), or the device is in ERROR (left only by Reset()); a failed
  // arc's error, with the device wherever the vendor left it (normally
  // ERROR). |target| equal to the current state, ERROR included, succeeds
  // without asking for an arc, as the kernel drivers' loop does. A wire
  // value >= kVfioStateCount (migration.h) must be refused with EINVAL
  // before it is converted to the enum.
  Result<vfio_device_mig_state> SetMigrationState(vfio_device_mig_state target);
  // The estimated STOP_COPY stream size. Valid in every state (uapi vfio.h:
  // "Can be called on each device state").
  Result<uint64_t> MigrationDataSize();
  // The saving stream (STOP_COPY, PRE_COPY, PRE_COPY_P2P); 0 at its end.
  // Errors: EINVAL not in a saving state, or no MigrationOps
  // (libvfio-user handle_mig_data_read; the kernel has no data fd then).
  Result<size_t> MigrationRead(std::span<std::byte> out);
  // The resuming stream. Errors: EINVAL not in RESUMING, or no MigrationOps
  // (libvfio-user handle_mig_data_write).
  Result<size_t> MigrationWrite(std::span<const std::byte> data);
  // VFIO_MIG_GET_PRECOPY_INFO. Errors: EINVAL not in PRE_COPY or
  // PRE_COPY_P2P (the kernel drivers' check); ENOTTY no MigrationOps, or the
  // device does not report it.
  Result<PrecopyInfo> MigrationPrecopyInfo();

  // Device DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_*), checked as
  // ValidateDmaLoggingStart() / DirtyBitmapWords() (dma_logging.h) do
  // before the vendor sees it. Errors: ENOTTY no DirtyLogOps; the checks'
  // errnos; the vendor's own (e.g. logging not started).
  Result<void> DmaLoggingStart(std::span<const SparseMmapArea> ranges, uint64_t page_size);
  Result<void> DmaLoggingStop();
  // VFIO_DEVICE_FEATURE_PROBE of the logging features: ENOTTY without them.
  Result<void> DmaLoggingSupported();
  // The dirty bitmap of [iova, iova + size), one bit per |page_size|, as
  // DirtyBitmapWords() u64 words; the vendor clears what it reports. Errors
  // also: EIO the vendor returned a bitmap of another size.
  Result<std::vector<uint64_t>> DmaLoggingReport(uint64_t iova, uint64_t size, uint64_t page_size);

  // The backend this handle's DMA goes to.
  IommuBackend& iommu() const { return *iommu_; }

 private:
  friend class GroupFile;
  friend Result<std::unique_ptr<DeviceFile>> OpenDeviceCdev(
      const std::shared_ptr<Group>&, const std::shared_ptr<AddressSpace>&,
      std::shared_ptr<const Vm>);
  // |keepalive| is what must outlive the handle: the group file, or the
  // address space of a cdev open.
  DeviceFile(std::shared_ptr<Device> device, std::shared_ptr<IommuBackend> iommu,
             std::shared_ptr<void> keepalive, uint64_t generation,
             std::function<void()> on_close);
  // The data stream's vendor calls; the public wrappers count the bytes.
  Result<size_t> ReadMigrationData(std::span<std::byte> out);
  Result<size_t> WriteMigrationData(std::span<const std::byte> data);
  // Device::Call() for a vendor call that returns a value.
  template <typename T, typename F>
  Result<T> CallFor(F&& fn) {
    T value{};
    UMDEV_TRY(device_->Call(generation_, [&](DeviceOps& ops) -> Result<void> {
      UMDEV_ASSIGN_OR_RETURN(value, fn(ops));
      return {};
    }));
    return value;
  }

  std::shared_ptr<Device> device_;
  std::shared_ptr<IommuBackend> iommu_;
  std::shared_ptr<void> keepalive_;
  uint64_t generation_;
  std::function<void()> on_close_;
};

// The device-centric path (kernel: /dev/vfio/devices/vfioN, BIND_IOMMUFD and
// ATTACH_IOMMUFD_PT in one step): opens the device of |group| (an emulated
// group has exactly one) with DMA into |space|, bypassing the group file.
// Errors: EBUSY the group is open through the group path; ENODEV removed;
// the vendor's Open() errors.
// |vm| is what KVM set on the device file before the bind (df->kvm).
Result<std::unique_ptr<DeviceFile>> OpenDeviceCdev(const std::shared_ptr<Group>& group,
                                                   const std::shared_ptr<AddressSpace>& space,
                                                   std::shared_ptr<const Vm> vm = nullptr);

}  // namespace umdev
