// DeviceFile's migration v2 and device DMA logging calls.
#include <fmt/format.h>

#include <algorithm>

#include "umdev/mdev_core/device.h"
#include "umdev/mdev_core/dma_logging.h"
#include "umdev/mdev_core/migration.h"

namespace umdev {
namespace {

// kernel vfio_ioctl_device_feature_*: a feature the device lacks is ENOTTY.
Result<MigrationOps*> MigrationOf(DeviceOps& ops) {
  MigrationOps* migration = ops.migration();
  if (migration == nullptr) return Fail(ENOTTY, "migration: not supported by the device");
  return migration;
}

Result<DirtyLogOps*> DirtyLogOf(DeviceOps& ops) {
  DirtyLogOps* log = ops.dirty_log();
  if (log == nullptr) return Fail(ENOTTY, "dma logging: not supported by the device");
  return log;
}

}  // namespace

Result<uint64_t> DeviceFile::MigrationFlags() {
  return CallFor<uint64_t>([](DeviceOps& ops) -> Result<uint64_t> {
    UMDEV_ASSIGN_OR_RETURN(MigrationOps * migration, MigrationOf(ops));
    return migration->flags();
  });
}

Result<vfio_device_mig_state> DeviceFile::GetMigrationState() {
  return CallFor<vfio_device_mig_state>([](DeviceOps& ops) -> Result<vfio_device_mig_state> {
    UMDEV_ASSIGN_OR_RETURN(MigrationOps * migration, MigrationOf(ops));
    return migration->GetState();
  });
}

Result<vfio_device_mig_state> DeviceFile::SetMigrationState(vfio_device_mig_state target) {
  Device::MigrationTurn turn(*device_);
  // One call for the whole walk: removal waits for it rather than cutting a
  // combination transition between two arcs.
  return CallFor<vfio_device_mig_state>([&](DeviceOps& ops) -> Result<vfio_device_mig_state> {
    UMDEV_ASSIGN_OR_RETURN(MigrationOps * migration, MigrationOf(ops));
    const uint64_t flags = migration->flags();
    vfio_device_mig_state current = migration->GetState();
    while (current != target) {
      UMDEV_ASSIGN_OR_RETURN(const vfio_device_mig_state next,
                             NextMigrationState(flags, current, target));
      if (Result<void> arc = migration->SetState(next); !arc.has_value()) {
        return std::unexpected(
            Wrap(arc.error(), fmt::format("migration arc {} -> {}", MigrationStateName(current),
                                          MigrationStateName(next))));
      }
      current = next;
    }
    return current;
  });
}

Result<uint64_t> DeviceFile::MigrationDataSize() {
  return CallFor<uint64_t>([](DeviceOps& ops) -> Result<uint64_t> {
    UMDEV_ASSIGN_OR_RETURN(MigrationOps * migration, MigrationOf(ops));
    return migration->GetDataSize();
  });
}

Result<size_t> DeviceFile::ReadMigrationData(std::span<std::byte> out) {
  Device::MigrationTurn turn(*device_);
  return CallFor<size_t>([&](DeviceOps& ops) -> Result<size_t> {
    MigrationOps* migration = ops.migration();
    if (migration == nullptr) return Fail(EINVAL, "migration data read: no migration support");
    const vfio_device_mig_state state = migration->GetState();
    if (!IsSavingState(state)) {
      return Fail(EINVAL, fmt::format("migration data read: device in {}, not saving",
                                      MigrationStateName(state)));
    }
    return migration->ReadData(out);
  });
}

Result<size_t> DeviceFile::MigrationRead(std::span<std::byte> out) {
  UMDEV_ASSIGN_OR_RETURN(const size_t done, ReadMigrationData(out));
  MutexLock lock(device_->mu_);
  device_->migration_bytes_saved_ += done;
  return done;
}

Result<size_t> DeviceFile::WriteMigrationData(std::span<const std::byte> data) {
  Device::MigrationTurn turn(*device_);
  return CallFor<size_t>([&](DeviceOps& ops) -> Result<size_t> {
    MigrationOps* migration = ops.migration();
    if (migration == nullptr) return Fail(EINVAL, "migration data write: no migration support");
    const vfio_device_mig_state state = migration->GetState();
    if (state != VFIO_DEVICE_STATE_RESUMING) {
      return Fail(EINVAL, fmt::format("migration data write: device in {}, not RESUMING",
                                      MigrationStateName(state)));
    }
    return migration->WriteData(data);
  });
}

Result<size_t> DeviceFile::MigrationWrite(std::span<const std::byte> data) {
  UMDEV_ASSIGN_OR_RETURN(const size_t done, WriteMigrationData(data));
  MutexLock lock(device_->mu_);
  device_->migration_bytes_loaded_ += done;
  return done;
}

Result<PrecopyInfo> DeviceFile::MigrationPrecopyInfo() {
  Device::MigrationTurn turn(*device_);
  return CallFor<PrecopyInfo>([](DeviceOps& ops) -> Result<PrecopyInfo> {
    MigrationOps* migration = ops.migration();
    if (migration == nullptr) return Fail(ENOTTY, "pre-copy info: no migration support");
    const vfio_device_mig_state state = migration->GetState();
    if (state != kVfioStatePreCopy && state != kVfioStatePreCopyP2P) {
      return Fail(EINVAL, fmt::format("pre-copy info: device in {}, not PRE_COPY",
                                      MigrationStateName(state)));
    }
    return migration->GetPrecopyInfo();
  });
}

Result<void> DeviceFile::DmaLoggingStart(std::span<const SparseMmapArea> ranges,
                                         uint64_t page_size) {
  return device_->Call(generation_, [&](DeviceOps& ops) -> Result<void> {
    UMDEV_ASSIGN_OR_RETURN(DirtyLogOps * log, DirtyLogOf(ops));
    UMDEV_TRY(ValidateDmaLoggingStart(ranges, page_size));
    return log->Start(ranges, page_size);
  });
}

Result<void> DeviceFile::DmaLoggingSupported() {
  return device_->Call(generation_, [](DeviceOps& ops) -> Result<void> {
    UMDEV_TRY(DirtyLogOf(ops));
    return {};
  });
}

Result<void> DeviceFile::DmaLoggingStop() {
  return device_->Call(generation_, [](DeviceOps& ops) -> Result<void> {
    UMDEV_ASSIGN_OR_RETURN(DirtyLogOps * log, DirtyLogOf(ops));
    return log->Stop();
  });
}

Result<std::vector<uint64_t>> DeviceFile::DmaLoggingReport(uint64_t iova, uint64_t size,
                                                           uint64_t page_size) {
  return CallFor<std::vector<uint64_t>>([&](DeviceOps& ops) -> Result<std::vector<uint64_t>> {
    UMDEV_ASSIGN_OR_RETURN(DirtyLogOps * log, DirtyLogOf(ops));
    UMDEV_ASSIGN_OR_RETURN(const size_t words, DirtyBitmapWords(iova, size, page_size));
    UMDEV_ASSIGN_OR_RETURN(std::vector<uint64_t> bitmap, log->ReadAndClear(iova, size, page_size));
    if (bitmap.size() != words) {
      return Fail(EIO, fmt::format("dma logging report: device returned {} words, expected {}",
                                   bitmap.size(), words));
    }
    return bitmap;
  });
}

Result<Device::Usage> Device::CurrentUsage() {
  Usage usage;
  std::shared_ptr<IommuBackend> iommu;
  {
    MutexLock lock(mu_);
    usage.open = open_count_ > 0;
    usage.migration_bytes_saved = migration_bytes_saved_;
    usage.migration_bytes_loaded = migration_bytes_loaded_;
    iommu = iommu_;
  }
  if (iommu != nullptr) usage.locked_bytes = iommu->locked_bytes();
  UMDEV_TRY(CallRegistered([&](DeviceOps& ops) -> Result<void> {
    if (MigrationOps* migration = ops.migration(); migration != nullptr) {
      usage.migration_state = migration->GetState();
    }
    return {};
  }));
  return usage;
}

bool Device::IsMigrationAttribute(std::string_view name) {
  return std::find(kMigrationAttributes.begin(), kMigrationAttributes.end(), name) !=
         kMigrationAttributes.end();
}

Result<std::string> Device::ReadMigrationAttribute(std::string_view name) {
  UMDEV_ASSIGN_OR_RETURN(const Usage usage, CurrentUsage());
  if (!usage.migration_state.has_value()) {
    return Fail(ENOENT, "no attribute " + std::string(name) + ": the device does not migrate");
  }
  if (name == "migration/state") return std::string(MigrationStateName(*usage.migration_state));
  if (name == "migration/bytes_saved") return std::to_string(usage.migration_bytes_saved);
  return std::to_string(usage.migration_bytes_loaded);
}

}  // namespace umdev
