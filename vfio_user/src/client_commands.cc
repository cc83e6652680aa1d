// Client: one method per client-to-server command, encoding the request and
// checking the reply the way QEMU's vfio-user-pci does.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "umdev/vfio_user/client.h"

namespace umdev::vfio_user {
namespace {

template <typename... T>
std::vector<std::byte> Payload(const T&... parts) {
  std::vector<std::byte> out;
  (AppendPod(out, parts), ...);
  return out;
}

template <typename T>
Result<T> LoadReply(const Message& reply, const char* what) {
  auto value = LoadPayload<T>(reply.payload);
  if (!value.has_value()) {
    return Fail(EPROTO, fmt::format("{}: reply of {} bytes is too short", what,
                                    reply.payload.size()));
  }
  return *value;
}

// Parses the capability chain of a complete region-info reply.
Result<void> ParseRegionCaps(std::span<const std::byte> bytes, uint32_t first, RegionInfo& out) {
  uint32_t at = first;
  for (int seen = 0; at != 0; ++seen) {
    auto cap = LoadPayload<vfio_info_cap_header>(bytes, at);
    if (seen == 64 || at < sizeof(vfio_region_info) || !cap.has_value()) {
      return Fail(EPROTO, fmt::format("GET_REGION_INFO: bad capability offset {}", at));
    }
    if (cap->id == VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
      auto count = LoadPayload<uint32_t>(bytes, at + sizeof(vfio_info_cap_header));
      if (!count.has_value()) return Fail(EPROTO, "GET_REGION_INFO: short sparse capability");
      std::vector<SparseArea> areas;
      const size_t first_area = at + sizeof(vfio_region_info_cap_sparse_mmap);
      for (uint32_t i = 0; i < *count; ++i) {
        auto area =
            LoadPayload<vfio_region_sparse_mmap_area>(bytes, first_area + i * sizeof(vfio_region_sparse_mmap_area));
        if (!area.has_value()) return Fail(EPROTO, "GET_REGION_INFO: short sparse capability");
        areas.push_back(SparseArea{area->offset, area->size});
      }
      out.sparse_areas = std::move(areas);
    } else if (cap->id == VFIO_REGION_INFO_CAP_TYPE) {
      auto type = LoadPayload<vfio_region_info_cap_type>(bytes, at);
      if (!type.has_value()) return Fail(EPROTO, "GET_REGION_INFO: short type capability");
      out.type = RegionInfo::Type{type->type, type->subtype};
    } else if (cap->id == VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) {
      out.msix_mappable = true;
    }
    if (cap->next != 0 && cap->next <= at) {
      return Fail(EPROTO, "GET_REGION_INFO: capability chain goes backwards");
    }
    at = cap->next;
  }
  return {};
}

}  // namespace

Result<Message> Client::Expect(Command command, std::span<const std::byte> payload,
                               std::span<const int> fds) {
  UMDEV_ASSIGN_OR_RETURN(Message reply, Call(command, payload, fds));
  const std::string name = CommandName(static_cast<uint16_t>(command));
  if ((reply.header.flags & kFlagError) != 0) {
    const int code = reply.header.error_no != 0 ? static_cast<int>(reply.header.error_no) : EIO;
    return Fail(code, name + ": the server replied with an error");
  }
  if (reply.header.command != static_cast<uint16_t>(command)) {
    return Fail(EPROTO, fmt::format("{}: reply is for {}", name,
                                    CommandName(reply.header.command)));
  }
  if (reply.oversized) return Fail(EPROTO, name + ": reply is too large");
  return reply;
}

Result<void> Client::DmaMap(uint64_t iova, uint64_t size, uint32_t prot, int fd,
                            uint64_t offset) {
  const DmaMapPayload map{sizeof(DmaMapPayload), prot, offset, iova, size};
  std::span<const int> fds;
  if (fd >= 0) fds = std::span<const int>(&fd, 1);
  UMDEV_TRY(Expect(Command::kDmaMap, Payload(map), fds));
  return {};
}

Result<void> Client::DmaUnmap(uint64_t iova, uint64_t size) {
  UMDEV_TRY(Expect(Command::kDmaUnmap, Payload(DmaUnmapPayload{sizeof(DmaUnmapPayload), 0,
                                                               iova, size})));
  return {};
}

Result<void> Client::DmaUnmapAll() {
  UMDEV_TRY(Expect(Command::kDmaUnmap, Payload(DmaUnmapPayload{sizeof(DmaUnmapPayload),
                                                               VFIO_DMA_UNMAP_FLAG_ALL, 0, 0})));
  return {};
}

Result<DeviceInfo> Client::GetDeviceInfo() {
  UMDEV_ASSIGN_OR_RETURN(Message reply, Expect(Command::kDeviceGetInfo,
                                               Payload(DeviceInfoPayload{sizeof(DeviceInfoPayload)})));
  UMDEV_ASSIGN_OR_RETURN(DeviceInfoPayload info, LoadReply<DeviceInfoPayload>(reply, "GET_INFO"));
  return DeviceInfo{info.flags, info.num_regions, info.num_irqs};
}

Result<RegionInfo> Client::GetRegionInfo(uint32_t index) {
  uint32_t argsz = sizeof(vfio_region_info);
  for (int attempt = 0; attempt < 3; ++attempt) {
    vfio_region_info query{};
    query.argsz = argsz;
    query.index = index;
    UMDEV_ASSIGN_OR_RETURN(Message reply, Expect(Command::kDeviceGetRegionInfo, Payload(query)));
    UMDEV_ASSIGN_OR_RETURN(vfio_region_info info,
                           LoadReply<vfio_region_info>(reply, "GET_REGION_INFO"));
    if (info.argsz > argsz) {  // The caps did not fit: ask again with room for them.
      argsz = info.argsz;
      continue;
    }
    RegionInfo out;
    out.index = index;
    out.flags = info.flags;
    out.size = info.size;
    out.offset = info.offset;
    if ((info.flags & VFIO_REGION_INFO_FLAG_CAPS) != 0 && info.cap_offset != 0) {
      const size_t length = std::min<size_t>(reply.payload.size(), info.argsz);
      UMDEV_TRY(ParseRegionCaps(std::span(reply.payload).first(length), info.cap_offset, out));
    }
    if (!reply.fds.empty()) out.fd = std::move(reply.fds.front());
    return out;
  }
  return Fail(EPROTO, fmt::format("GET_REGION_INFO: region {}: argsz keeps growing", index));
}

Result<RegionIoFds> Client::GetRegionIoFds(uint32_t index) {
  uint32_t argsz = sizeof(RegionIoFdsPayload);
  for (int attempt = 0; attempt < 3; ++attempt) {
    UMDEV_ASSIGN_OR_RETURN(Message reply,
                           Expect(Command::kDeviceGetRegionIoFds,
                                  Payload(RegionIoFdsPayload{argsz, 0, index, 0})));
    UMDEV_ASSIGN_OR_RETURN(RegionIoFdsPayload header,
                           LoadReply<RegionIoFdsPayload>(reply, "GET_REGION_IO_FDS"));
    if (header.argsz > argsz) {
      argsz = header.argsz;
      continue;
    }
    RegionIoFds out;
    out.header = header;
    out.entries.assign(reply.payload.begin() + sizeof(RegionIoFdsPayload), reply.payload.end());
    out.fds = std::move(reply.fds);
    return out;
  }
  return Fail(EPROTO, fmt::format("GET_REGION_IO_FDS: region {}: argsz keeps growing", index));
}

Result<IrqInfo> Client::GetIrqInfo(uint32_t index) {
  vfio_irq_info query{};
  query.argsz = sizeof(query);
  query.index = index;
  UMDEV_ASSIGN_OR_RETURN(Message reply, Expect(Command::kDeviceGetIrqInfo, Payload(query)));
  UMDEV_ASSIGN_OR_RETURN(vfio_irq_info info, LoadReply<vfio_irq_info>(reply, "GET_IRQ_INFO"));
  return IrqInfo{index, info.flags, info.count};
}

Result<void> Client::SetIrqEventfds(uint32_t index, uint32_t start, uint32_t action,
                                    std::span<const int> fds) {
  const uint32_t flags = VFIO_IRQ_SET_DATA_EVENTFD | action;
  if (fds.empty()) {
    UMDEV_TRY(Expect(Command::kDeviceSetIrqs,
                     Payload(IrqSetPayload{sizeof(IrqSetPayload), flags, index, start, 0})));
    return {};
  }
  const size_t max_fds = server_caps().max_msg_fds;
  for (size_t sent = 0; sent < fds.size();) {
    // A message carries only valid fds or only -1 entries (sent as no fds).
    const bool valid = fds[sent] >= 0;
    if (valid && max_fds == 0) return Fail(EINVAL, "SET_IRQS: the server takes no fds");
    const size_t limit = std::min(fds.size() - sent, std::max<size_t>(max_fds, 1));
    size_t run = 1;
    while (run < limit && (fds[sent + run] >= 0) == valid) ++run;
    const IrqSetPayload set{sizeof(IrqSetPayload), flags, index,
                            static_cast<uint32_t>(start + sent), static_cast<uint32_t>(run)};
    UMDEV_TRY(Expect(Command::kDeviceSetIrqs, Payload(set),
                     valid ? fds.subspan(sent, run) : std::span<const int>()));
    sent += run;
  }
  return {};
}

Result<void> Client::SetIrqsNone(uint32_t index, uint32_t start, uint32_t count,
                                 uint32_t action) {
  const IrqSetPayload set{sizeof(IrqSetPayload), VFIO_IRQ_SET_DATA_NONE | action, index, start,
                          count};
  UMDEV_TRY(Expect(Command::kDeviceSetIrqs, Payload(set)));
  return {};
}

Result<void> Client::SetIrqsBool(uint32_t index, uint32_t start, uint32_t action,
                                 std::span<const uint8_t> values) {
  const IrqSetPayload set{static_cast<uint32_t>(sizeof(IrqSetPayload) + values.size()),
                          VFIO_IRQ_SET_DATA_BOOL | action, index, start,
                          static_cast<uint32_t>(values.size())};
  std::vector<std::byte> payload = Payload(set);
  AppendBytes(payload, std::as_bytes(values));
  UMDEV_TRY(Expect(Command::kDeviceSetIrqs, payload));
  return {};
}

Result<size_t> Client::RegionRead(uint32_t region, uint64_t offset, std::span<std::byte> out) {
  const size_t chunk_max = server_caps().max_data_xfer_size;
  size_t done = 0;
  while (done < out.size()) {
    const auto count = static_cast<uint32_t>(std::min(out.size() - done, chunk_max));
    const RegionAccessPayload access{offset + done, region, count};
    UMDEV_ASSIGN_OR_RETURN(Message reply, Expect(Command::kRegionRead, Payload(access)));
    UMDEV_ASSIGN_OR_RETURN(RegionAccessPayload got,
                           LoadReply<RegionAccessPayload>(reply, "REGION_READ"));
    if (got.count > count) {
      return Fail(E2BIG, fmt::format("REGION_READ: {} bytes back for {}", got.count, count));
    }
    if (reply.payload.size() != sizeof(RegionAccessPayload) + got.count) {
      return Fail(EPROTO, fmt::format("REGION_READ: {} data bytes for count {}",
                                      reply.payload.size() - sizeof(RegionAccessPayload),
                                      got.count));
    }
    std::memcpy(out.data() + done, reply.payload.data() + sizeof(RegionAccessPayload), got.count);
    done += got.count;
    if (got.count < count) break;
  }
  return done;
}

Result<void> Client::RegionWrite(uint32_t region, uint64_t offset,
                                 std::span<const std::byte> data, WriteMode mode) {
  const size_t chunk_max = server_caps().max_data_xfer_size;
  for (size_t done = 0; done < data.size();) {
    const auto count = static_cast<uint32_t>(std::min(data.size() - done, chunk_max));
    std::vector<std::byte> payload = Payload(RegionAccessPayload{offset + done, region, count});
    AppendBytes(payload, data.subspan(done, count));
    if (mode == WriteMode::kPosted) {
      UMDEV_TRY(Send(static_cast<uint16_t>(Command::kRegionWrite), payload, {},
                     kTypeCommand | kFlagNoReply));
    } else {
      UMDEV_ASSIGN_OR_RETURN(Message reply, Expect(Command::kRegionWrite, payload));
      UMDEV_ASSIGN_OR_RETURN(RegionAccessPayload got,
                             LoadReply<RegionAccessPayload>(reply, "REGION_WRITE"));
      if (got.count != count) {
        return Fail(EIO, fmt::format("REGION_WRITE: {} of {} bytes written", got.count, count));
      }
    }
    done += count;
  }
  return {};
}

Result<void> Client::RegionWriteMulti(std::span<const WriteMultiEntry> writes, WriteMode mode) {
  if (!server_caps().write_multiple) {
    return Fail(EOPNOTSUPP, "REGION_WRITE_MULTI: the server did not offer write_multiple");
  }
  for (size_t done = 0; done < writes.size();) {
    const size_t count = std::min<size_t>(writes.size() - done, kMaxWriteMultiEntries);
    std::vector<std::byte> payload = Payload(static_cast<uint64_t>(count));
    AppendBytes(payload, std::as_bytes(writes.subspan(done, count)));
    if (mode == WriteMode::kPosted) {
      UMDEV_TRY(Send(static_cast<uint16_t>(Command::kRegionWriteMulti), payload, {},
                     kTypeCommand | kFlagNoReply));
    } else {
      UMDEV_ASSIGN_OR_RETURN(Message reply, Expect(Command::kRegionWriteMulti, payload));
      UMDEV_ASSIGN_OR_RETURN(uint64_t got, LoadReply<uint64_t>(reply, "REGION_WRITE_MULTI"));
      if (got != count) {
        return Fail(EIO, fmt::format("REGION_WRITE_MULTI: {} of {} writes done", got, count));
      }
    }
    done += count;
  }
  return {};
}

Result<void> Client::Reset() {
  UMDEV_TRY(Expect(Command::kDeviceReset, {}));
  return {};
}

Result<std::vector<std::byte>> Client::DeviceFeature(uint32_t flags,
                                                     std::span<const std::byte> data,
                                                     uint32_t argsz) {
  if (argsz == 0) argsz = static_cast<uint32_t>(sizeof(DeviceFeaturePayload) + data.size());
  std::vector<std::byte> payload = Payload(DeviceFeaturePayload{argsz, flags});
  AppendBytes(payload, data);
  UMDEV_ASSIGN_OR_RETURN(Message reply, Expect(Command::kDeviceFeature, payload));
  UMDEV_TRY(LoadReply<DeviceFeaturePayload>(reply, "DEVICE_FEATURE"));
  return std::vector<std::byte>(reply.payload.begin() + sizeof(DeviceFeaturePayload),
                                reply.payload.end());
}

Result<uint64_t> Client::GetMigrationFlags() {
  UMDEV_ASSIGN_OR_RETURN(
      std::vector<std::byte> data,
      DeviceFeature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION, {},
                    sizeof(DeviceFeaturePayload) + sizeof(vfio_device_feature_migration)));
  auto flags = LoadPayload<uint64_t>(data);
  if (!flags.has_value()) return Fail(EPROTO, "DEVICE_FEATURE MIGRATION: short reply");
  return *flags;
}

Result<uint32_t> Client::GetMigrationState() {
  UMDEV_ASSIGN_OR_RETURN(
      std::vector<std::byte> data,
      DeviceFeature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, {},
                    sizeof(DeviceFeaturePayload) + sizeof(vfio_device_feature_mig_state)));
  auto state = LoadPayload<uint32_t>(data);
  if (!state.has_value()) return Fail(EPROTO, "DEVICE_FEATURE MIG_DEVICE_STATE: short reply");
  return *state;
}

Result<void> Client::SetMigrationState(uint32_t state) {
  vfio_device_feature_mig_state body{};
  body.device_state = state;
  body.data_fd = -1;
  UMDEV_TRY(DeviceFeature(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
                          Payload(body)));
  return {};
}

Result<std::vector<std::byte>> Client::MigDataRead(uint32_t size) {
  const MigDataPayload request{static_cast<uint32_t>(sizeof(MigDataPayload) + size), size};
  UMDEV_ASSIGN_OR_RETURN(Message reply, Expect(Command::kMigDataRead, Payload(request)));
  UMDEV_ASSIGN_OR_RETURN(MigDataPayload got, LoadReply<MigDataPayload>(reply, "MIG_DATA_READ"));
  if (got.size > size || reply.payload.size() != sizeof(MigDataPayload) + got.size) {
    return Fail(EPROTO, fmt::format("MIG_DATA_READ: reply size {} with {} data bytes", got.size,
                                    reply.payload.size() - sizeof(MigDataPayload)));
  }
  return std::vector<std::byte>(reply.payload.begin() + sizeof(MigDataPayload),
                                reply.payload.end());
}

Result<void> Client::MigDataWrite(std::span<const std::byte> data) {
  const size_t chunk_max = server_caps().max_data_xfer_size;
  for (size_t done = 0; done < data.size();) {
    const auto count = static_cast<uint32_t>(std::min(data.size() - done, chunk_max));
    std::vector<std::byte> payload =
        Payload(MigDataPayload{static_cast<uint32_t>(sizeof(MigDataPayload) + count), count});
    AppendBytes(payload, data.subspan(done, count));
    UMDEV_TRY(Expect(Command::kMigDataWrite, payload));
    done += count;
  }
  return {};
}

}  // namespace umdev::vfio_user
