// Session: DEVICE_FEATURE (migration v2 state and DMA logging, as the
// kernel's VFIO_DEVICE_FEATURE with its data inline) and the migration data
// stream (MIG_DATA_READ / MIG_DATA_WRITE).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "session.h"
#include "umdev/mdev_core/dma_logging.h"
#include "umdev/mdev_core/migration.h"

namespace umdev::vfio_user {
namespace {

// The wire forms of the feature payloads (vfio-user carries the data inline
// where the kernel passes user pointers).
struct MigStateData {
  uint32_t device_state = 0;
  int32_t data_fd = -1;  // No data fd in vfio-user: MIG_DATA_* carry the stream.
};

constexpr uint32_t kFeatureOps =
    VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PROBE;

// kernel vfio_check_feature(): which operations a feature allows, and the
// argsz its data needs. Returns true when this is a probe that succeeded.
Result<bool> CheckFeature(uint32_t flags, uint32_t argsz, uint32_t supported, size_t data_size) {
  const uint32_t ops = flags & kFeatureOps;
  if ((ops & ~(supported | VFIO_DEVICE_FEATURE_PROBE)) != 0) {
    return Fail(EINVAL, "DEVICE_FEATURE: operation not supported by this feature");
  }
  if ((ops & VFIO_DEVICE_FEATURE_PROBE) != 0) return true;
  if ((ops & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET)) == 0) {
    return Fail(EINVAL, "DEVICE_FEATURE: neither GET nor SET");
  }
  if (argsz < sizeof(DeviceFeaturePayload) + data_size) {
    return Fail(EINVAL, fmt::format("DEVICE_FEATURE: argsz {} is under {}", argsz,
                                    sizeof(DeviceFeaturePayload) + data_size));
  }
  return false;
}

Reply FeatureReply(const DeviceFeaturePayload& request, std::span<const std::byte> data) {
  Reply reply;
  AppendPod(reply.payload,
            DeviceFeaturePayload{static_cast<uint32_t>(sizeof(DeviceFeaturePayload) + data.size()),
                                 request.flags});
  AppendBytes(reply.payload, data);
  return reply;
}

template <typename T>
std::span<const std::byte> AsBytes(const T& value) {
  return std::as_bytes(std::span(&value, 1));
}

}  // namespace

Result<Reply> Session::HandleDeviceFeature(const Message& message) {
  auto header = LoadPayload<DeviceFeaturePayload>(message.payload);
  if (!header) return Fail(EINVAL, "DEVICE_FEATURE: payload under 8 bytes");
  const auto data = std::span(message.payload).subspan(sizeof(DeviceFeaturePayload));
  const uint32_t feature = header->flags & VFIO_DEVICE_FEATURE_MASK;
  if ((header->flags & ~(VFIO_DEVICE_FEATURE_MASK | kFeatureOps)) != 0) {
    return Fail(EINVAL, "DEVICE_FEATURE: unknown flags");
  }
  const bool get = (header->flags & VFIO_DEVICE_FEATURE_GET) != 0;
  switch (feature) {
    case VFIO_DEVICE_FEATURE_MIGRATION: {
      UMDEV_ASSIGN_OR_RETURN(uint64_t flags, file_->MigrationFlags());
      UMDEV_ASSIGN_OR_RETURN(bool probe, CheckFeature(header->flags, header->argsz,
                                                      VFIO_DEVICE_FEATURE_GET, sizeof(uint64_t)));
      if (probe) return FeatureReply(*header, {});
      return FeatureReply(*header, AsBytes(flags));
    }
    case VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE: {
      UMDEV_TRY(file_->MigrationFlags());  // ENOTTY without migration.
      UMDEV_ASSIGN_OR_RETURN(
          bool probe, CheckFeature(header->flags, header->argsz,
                                   VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET,
                                   sizeof(MigStateData)));
      if (probe) return FeatureReply(*header, {});
      MigStateData state;
      if (get) {
        UMDEV_ASSIGN_OR_RETURN(vfio_device_mig_state now, file_->GetMigrationState());
        state.device_state = now;
        return FeatureReply(*header, AsBytes(state));
      }
      auto wanted = LoadPayload<MigStateData>(data);
      if (!wanted) return Fail(EINVAL, "DEVICE_FEATURE: MIG_DEVICE_STATE without its data");
      // Values past the last state are not an enum value at all.
      if (wanted->device_state >= kVfioStateCount) {
        return Fail(EINVAL, fmt::format("DEVICE_FEATURE: no migration state {}",
                                        wanted->device_state));
      }
      UMDEV_ASSIGN_OR_RETURN(
          vfio_device_mig_state reached,
          file_->SetMigrationState(static_cast<vfio_device_mig_state>(wanted->device_state)));
      spdlog::info("vfio-user: {}: migration state {}", name_, MigrationStateName(reached));
      state.device_state = reached;
      return FeatureReply(*header, AsBytes(state));
    }
    case kVfioDeviceFeatureMigDataSize: {
      UMDEV_TRY(file_->MigrationFlags());
      UMDEV_ASSIGN_OR_RETURN(bool probe, CheckFeature(header->flags, header->argsz,
                                                      VFIO_DEVICE_FEATURE_GET, sizeof(uint64_t)));
      if (probe) return FeatureReply(*header, {});
      UMDEV_ASSIGN_OR_RETURN(uint64_t size, file_->MigrationDataSize());
      return FeatureReply(*header, AsBytes(size));
    }
    case VFIO_DEVICE_FEATURE_DMA_LOGGING_START: {
      UMDEV_TRY(file_->DmaLoggingSupported());  // ENOTTY first, as the kernel.
      UMDEV_ASSIGN_OR_RETURN(bool probe, CheckFeature(header->flags, header->argsz,
                                                      VFIO_DEVICE_FEATURE_SET,
                                                      sizeof(DmaLoggingControl)));
      if (probe) return FeatureReply(*header, {});
      auto control = LoadPayload<DmaLoggingControl>(data);
      if (!control) return Fail(EINVAL, "DEVICE_FEATURE: DMA_LOGGING_START without its data");
      const size_t ranges_bytes = data.size() - sizeof(DmaLoggingControl);
      if (ranges_bytes != uint64_t{control->num_ranges} * sizeof(DmaLoggingRange)) {
        return Fail(EINVAL, "DEVICE_FEATURE: DMA_LOGGING_START range count does not match");
      }
      std::vector<SparseMmapArea> ranges(control->num_ranges);
      for (uint32_t i = 0; i < control->num_ranges; ++i) {
        const auto range = *LoadPayload<DmaLoggingRange>(
            data, sizeof(DmaLoggingControl) + i * sizeof(DmaLoggingRange));
        ranges[i] = SparseMmapArea{range.iova, range.length};
      }
      UMDEV_TRY(file_->DmaLoggingStart(ranges, control->page_size));
      return FeatureReply(*header, {});
    }
    case VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP: {
      UMDEV_TRY(file_->DmaLoggingSupported());
      UMDEV_ASSIGN_OR_RETURN(bool probe, CheckFeature(header->flags, header->argsz,
                                                      VFIO_DEVICE_FEATURE_SET, 0));
      if (!probe) UMDEV_TRY(file_->DmaLoggingStop());
      return FeatureReply(*header, {});
    }
    case VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT: {
      UMDEV_TRY(file_->DmaLoggingSupported());
      UMDEV_ASSIGN_OR_RETURN(bool probe, CheckFeature(header->flags, header->argsz,
                                                      VFIO_DEVICE_FEATURE_GET,
                                                      sizeof(DmaLoggingReport)));
      if (probe) return FeatureReply(*header, {});
      auto report = LoadPayload<DmaLoggingReport>(data);
      if (!report) return Fail(EINVAL, "DEVICE_FEATURE: DMA_LOGGING_REPORT without its data");
      // The reply's size is known from the request: refused before the
      // device builds a bitmap the reply could never carry.
      UMDEV_ASSIGN_OR_RETURN(const size_t words, DirtyBitmapWords(report->iova, report->length,
                                                                  report->page_size));
      const uint64_t bitmap_bytes = uint64_t{words} * sizeof(uint64_t);
      if (sizeof(DmaLoggingReport) + bitmap_bytes > limits_.max_data_xfer_size) {
        return Fail(E2BIG, "DEVICE_FEATURE: dirty bitmap over max_data_xfer_size");
      }
      if (header->argsz < sizeof(DeviceFeaturePayload) + sizeof(DmaLoggingReport) + bitmap_bytes) {
        return Fail(EINVAL, "DEVICE_FEATURE: argsz cannot hold the dirty bitmap");
      }
      UMDEV_ASSIGN_OR_RETURN(auto bitmap,
                             file_->DmaLoggingReport(report->iova, report->length,
                                                     report->page_size));
      std::vector<std::byte> out;
      AppendPod(out, *report);
      AppendBytes(out, std::as_bytes(std::span(bitmap)));
      return FeatureReply(*header, out);
    }
    default:
      // kernel vfio_ioctl_device_feature(): a feature nobody implements.
      return Fail(ENOTTY, fmt::format("DEVICE_FEATURE: feature {} not supported", feature));
  }
}

Result<Reply> Session::HandleMigDataRead(const Message& message) {
  auto request = LoadPayload<MigDataPayload>(message.payload);
  if (!request || message.payload.size() != sizeof(MigDataPayload)) {
    return Fail(EINVAL, "MIG_DATA_READ: payload must be 8 bytes");
  }
  if (request->size > limits_.max_data_xfer_size) {
    return Fail(E2BIG, fmt::format("MIG_DATA_READ: size {} over max_data_xfer_size", request->size));
  }
  if (request->argsz < sizeof(MigDataPayload) + uint64_t{request->size}) {
    return Fail(EINVAL, "MIG_DATA_READ: argsz cannot hold the data asked for");
  }
  std::vector<std::byte> data(request->size);
  UMDEV_ASSIGN_OR_RETURN(size_t got, file_->MigrationRead(data));
  data.resize(got);  // Short: the end of the stream (spec).
  Reply reply;
  AppendPod(reply.payload, MigDataPayload{static_cast<uint32_t>(sizeof(MigDataPayload) + got),
                                          static_cast<uint32_t>(got)});
  AppendBytes(reply.payload, data);
  return reply;
}

Result<Reply> Session::HandleMigDataWrite(const Message& message) {
  auto request = LoadPayload<MigDataPayload>(message.payload);
  if (!request) return Fail(EINVAL, "MIG_DATA_WRITE: payload under 8 bytes");
  auto data = std::span(message.payload).subspan(sizeof(MigDataPayload));
  if (data.size() != request->size) {
    return Fail(EINVAL, fmt::format("MIG_DATA_WRITE: size {} but {} data bytes", request->size,
                                    data.size()));
  }
  if (request->size > limits_.max_data_xfer_size) {
    return Fail(E2BIG, "MIG_DATA_WRITE: size over max_data_xfer_size");
  }
  while (!data.empty()) {
    UMDEV_ASSIGN_OR_RETURN(size_t done, file_->MigrationWrite(data));
    if (done == 0) return Fail(EIO, "MIG_DATA_WRITE: the device took no data");
    data = data.subspan(std::min(done, data.size()));
  }
  return Reply{};
}

}  // namespace umdev::vfio_user
