// Session: VERSION, DMA map/unmap, and the device commands that mirror the
// VFIO device ioctls. Each validates its payload before anything is called.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "session.h"
#include "umdev/common/eventfd.h"
#include "umdev/mdev_core/region_info.h"

namespace umdev::vfio_user {
namespace {

template <typename T>
Result<T> Load(const Message& message, const char* what) {
  auto value = LoadPayload<T>(message.payload);
  if (!value) {
    return Fail(EINVAL, fmt::format("{}: payload of {} bytes is under {}", what,
                                    message.payload.size(), sizeof(T)));
  }
  return *value;
}

// The argsz of an info query: what the client can take back.
Result<void> CheckArgsz(uint32_t argsz, size_t minimum, const char* what) {
  if (argsz < minimum) return Fail(EINVAL, fmt::format("{}: argsz {} is under {}", what, argsz, minimum));
  return {};
}

}  // namespace

Result<Reply> Session::HandleVersion(const Message& message) {
  if (negotiated_) return Fail(EINVAL, "VERSION: already negotiated");
  UMDEV_ASSIGN_OR_RETURN(VersionPayload version, Load<VersionPayload>(message, "VERSION"));
  if (version.major != kVersionMajor) {
    return Fail(ENOTSUP, fmt::format("VERSION: major {} is not ours ({})", version.major,
                                     kVersionMajor));
  }
  Capabilities client;
  if (message.payload.size() > sizeof(VersionPayload)) {
    UMDEV_ASSIGN_OR_RETURN(client, ParseCapabilities(std::span(message.payload)
                                                         .subspan(sizeof(VersionPayload))));
  }
  if (client.max_data_xfer_size == 0) return Fail(EINVAL, "VERSION: max_data_xfer_size is 0");
  peer_max_xfer_ = client.max_data_xfer_size;

  const IommuInfo iommu = iommu_->info();
  Capabilities ours;
  ours.max_msg_fds = limits_.max_msg_fds;
  ours.max_data_xfer_size = limits_.max_data_xfer_size;
  ours.pgsizes = iommu.pgsizes;
  // QEMU may only lower max_dma_maps from its own offer.
  ours.max_dma_maps = std::min(iommu.max_mappings, client.max_dma_maps);
  max_dma_maps_ = ours.max_dma_maps;
  ours.write_multiple = true;  // REGION_WRITE_MULTI is served.
  const VersionPayload reply_version{kVersionMajor,
                                     std::min<uint16_t>(version.minor, kVersionMinor)};
  Reply reply;
  AppendPod(reply.payload, reply_version);
  const std::string json = FormatCapabilities(ours);
  AppendBytes(reply.payload, std::as_bytes(std::span(json)));
  negotiated_ = true;
  spdlog::info("vfio-user: {}: negotiated version {}.{}, client max_data_xfer_size {}", name_,
               reply_version.major, reply_version.minor, client.max_data_xfer_size);
  return reply;
}

Result<Reply> Session::HandleDmaMap(Message& message) {
  UMDEV_ASSIGN_OR_RETURN(DmaMapPayload map, Load<DmaMapPayload>(message, "DMA_MAP"));
  UMDEV_TRY(CheckArgsz(map.argsz, sizeof(DmaMapPayload), "DMA_MAP"));
  if ((map.flags & ~(kProtRead | kProtWrite)) != 0) {
    return Fail(EINVAL, fmt::format("DMA_MAP: unknown flags {:#x}", map.flags));
  }
  if (message.fds.size() > 1) return Fail(EINVAL, "DMA_MAP: more than one fd");
  // The client agreed to this many in VERSION; type1's errno past its cap.
  if (iommu_->mapping_count() >= max_dma_maps_) {
    return Fail(ENOSPC, fmt::format("DMA_MAP: {} mappings live, the negotiated max_dma_maps",
                                    max_dma_maps_));
  }
  DmaMapRequest request;
  request.iova = map.address;
  request.size = map.size;
  request.prot = map.flags;
  request.offset = map.offset;
  if (!message.fds.empty()) request.fd = std::move(message.fds[0]);
  UMDEV_TRY(iommu_->Map(std::move(request)));
  return Reply{};
}

Result<Reply> Session::HandleDmaUnmap(const Message& message) {
  UMDEV_ASSIGN_OR_RETURN(DmaUnmapPayload unmap, Load<DmaUnmapPayload>(message, "DMA_UNMAP"));
  UMDEV_TRY(CheckArgsz(unmap.argsz, sizeof(DmaUnmapPayload), "DMA_UNMAP"));
  if (unmap.flags == VFIO_DMA_UNMAP_FLAG_ALL) {
    // kernel vfio_dma_do_unmap: unmap-all takes no range.
    if (unmap.address != 0 || unmap.size != 0) {
      return Fail(EINVAL, "DMA_UNMAP: unmap-all with a range");
    }
    UMDEV_TRY(iommu_->UnmapAll());
  } else if (unmap.flags != 0) {
    // GET_DIRTY_BITMAP left the protocol in 0.9.2 (dirty logging is a
    // device feature now).
    return Fail(EINVAL, fmt::format("DMA_UNMAP: unsupported flags {:#x}", unmap.flags));
  } else {
    UMDEV_TRY(iommu_->Unmap(unmap.address, unmap.size));
  }
  Reply reply;
  AppendPod(reply.payload, DmaUnmapPayload{sizeof(DmaUnmapPayload), unmap.flags, unmap.address,
                                           unmap.size});
  return reply;
}

Result<Reply> Session::HandleGetInfo(const Message& message) {
  UMDEV_ASSIGN_OR_RETURN(DeviceInfoPayload query, Load<DeviceInfoPayload>(message, "GET_INFO"));
  UMDEV_TRY(CheckArgsz(query.argsz, sizeof(DeviceInfoPayload), "DEVICE_GET_INFO"));
  UMDEV_ASSIGN_OR_RETURN(DeviceInfo info, file_->GetInfo());
  Reply reply;
  AppendPod(reply.payload, DeviceInfoPayload{sizeof(DeviceInfoPayload), info.flags,
                                             info.num_regions, info.num_irqs});
  return reply;
}

Result<Reply> Session::HandleGetRegionInfo(const Message& message) {
  UMDEV_ASSIGN_OR_RETURN(vfio_region_info query,
                         Load<vfio_region_info>(message, "GET_REGION_INFO"));
  UMDEV_TRY(CheckArgsz(query.argsz, sizeof(vfio_region_info), "DEVICE_GET_REGION_INFO"));
  UMDEV_ASSIGN_OR_RETURN(RegionInfo info, file_->GetRegionInfo(query.index));
  // vfio-user has no offset scheme: |offset| is the region's place in its fd.
  Reply reply;
  reply.payload = EncodeRegionInfo(query.index, info, info.mmap_offset, query.argsz);
  auto header = LoadPayload<vfio_region_info>(reply.payload);
  if (header && (header->flags & VFIO_REGION_INFO_FLAG_CAPS) != 0 && header->cap_offset == 0) {
    // Unlike the kernel, vfio-user names where the chain starts even in a
    // short reply, and QEMU rejects the region (EINVAL) when it does not.
    header->cap_offset = sizeof(vfio_region_info);
    std::memcpy(reply.payload.data(), &*header, sizeof(vfio_region_info));
  }
  // The fd goes with the complete answer only, as libvfio-user does: a
  // client asking with a short argsz asks again and gets it then.
  const bool complete = header && reply.payload.size() >= header->argsz;
  if ((info.flags & VFIO_REGION_INFO_FLAG_MMAP) != 0 && info.mmap_fd >= 0 && complete) {
    reply.fd = info.mmap_fd;
  }
  return reply;
}

Result<Reply> Session::HandleGetRegionIoFds(const Message& message) {
  UMDEV_ASSIGN_OR_RETURN(RegionIoFdsPayload query,
                         Load<RegionIoFdsPayload>(message, "GET_REGION_IO_FDS"));
  UMDEV_TRY(CheckArgsz(query.argsz, sizeof(RegionIoFdsPayload), "GET_REGION_IO_FDS"));
  if (query.flags != 0 || query.count != 0) {
    return Fail(EINVAL, "GET_REGION_IO_FDS: flags and count must be 0");
  }
  // A bad index is EINVAL, as GET_REGION_INFO says.
  UMDEV_TRY(file_->GetRegionInfo(query.index));
  // We offer no ioeventfds: every access comes as a message (spec: allowed).
  Reply reply;
  AppendPod(reply.payload,
            RegionIoFdsPayload{sizeof(RegionIoFdsPayload), 0, query.index, 0});
  return reply;
}

Result<Reply> Session::HandleGetIrqInfo(const Message& message) {
  UMDEV_ASSIGN_OR_RETURN(vfio_irq_info query, Load<vfio_irq_info>(message, "GET_IRQ_INFO"));
  UMDEV_TRY(CheckArgsz(query.argsz, sizeof(vfio_irq_info), "DEVICE_GET_IRQ_INFO"));
  UMDEV_ASSIGN_OR_RETURN(IrqInfo info, file_->GetIrqInfo(query.index));
  Reply reply;
  AppendPod(reply.payload, vfio_irq_info{sizeof(vfio_irq_info), info.flags, query.index,
                                         info.count});
  return reply;
}

Result<Reply> Session::HandleSetIrqs(Message& message) {
  UMDEV_ASSIGN_OR_RETURN(IrqSetPayload header, Load<IrqSetPayload>(message, "SET_IRQS"));
  // QEMU's argsz is the fixed part only, fds not counted (spec §SET_IRQS).
  UMDEV_TRY(CheckArgsz(header.argsz, sizeof(IrqSetPayload), "DEVICE_SET_IRQS"));
  const size_t data_bytes = message.payload.size() - sizeof(IrqSetPayload);
  IrqSet set;
  set.flags = header.flags;
  set.index = header.index;
  set.start = header.start;
  set.count = header.count;
  const uint32_t data_type = header.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
  // The vector range is checked against the device before anything is sized
  // from the client's count (kernel vfio_set_irqs_validate_and_prepare).
  UMDEV_ASSIGN_OR_RETURN(IrqInfo info, file_->GetIrqInfo(header.index));
  if (header.count != 0 &&
      (header.start >= info.count || header.count > info.count - header.start)) {
    return Fail(EINVAL, fmt::format("SET_IRQS: vectors [{}, +{}) outside the index's {}",
                                    header.start, header.count, info.count));
  }
  if (data_type == VFIO_IRQ_SET_DATA_BOOL) {
    if (data_bytes != header.count || !message.fds.empty()) {
      return Fail(EINVAL, fmt::format("SET_IRQS: {} bool bytes and {} fds for count {}",
                                      data_bytes, message.fds.size(), header.count));
    }
    const auto* first = reinterpret_cast<const uint8_t*>(message.payload.data()) +
                        sizeof(IrqSetPayload);
    set.bools.assign(first, first + data_bytes);
  } else if (data_type == VFIO_IRQ_SET_DATA_EVENTFD) {
    // No fds at all de-assigns the vectors (QEMU's runs of fd -1).
    if (data_bytes != 0 || (!message.fds.empty() && message.fds.size() != header.count)) {
      return Fail(EINVAL, fmt::format("SET_IRQS: {} fds for count {}", message.fds.size(),
                                      header.count));
    }
    for (const UniqueFd& fd : message.fds) UMDEV_TRY(AdoptClientEventFd(fd.get(), "SET_IRQS"));
    if (message.fds.empty()) {
      set.fds.resize(header.count);
    } else {
      set.fds = std::move(message.fds);
    }
  } else if (data_bytes != 0 || !message.fds.empty()) {
    return Fail(EINVAL, "SET_IRQS: DATA_NONE with data");
  }
  UMDEV_TRY(file_->SetIrqs(set));
  return Reply{};
}

Result<Reply> Session::HandleRegionRead(const Message& message) {
  UMDEV_ASSIGN_OR_RETURN(RegionAccessPayload access,
                         Load<RegionAccessPayload>(message, "REGION_READ"));
  if (message.payload.size() != sizeof(RegionAccessPayload)) {
    return Fail(EINVAL, "REGION_READ: request carries data");
  }
  if (access.count > limits_.max_data_xfer_size) {
    return Fail(E2BIG, fmt::format("REGION_READ: count {} is over max_data_xfer_size", access.count));
  }
  // As a read(2) of 0 bytes on a VFIO device fd: the index is checked, no
  // vendor sees it (vendors differ on empty accesses; the kernel does not).
  if (access.count == 0) {
    UMDEV_TRY(file_->GetRegionInfo(access.region));
    Reply empty;
    AppendPod(empty.payload, access);
    return empty;
  }
  Reply reply;
  reply.payload.resize(sizeof(RegionAccessPayload) + access.count);
  auto out = std::span(reply.payload).subspan(sizeof(RegionAccessPayload));
  UMDEV_ASSIGN_OR_RETURN(size_t done, file_->RegionRead(access.region, access.offset, out));
  access.count = static_cast<uint32_t>(std::min<size_t>(done, access.count));
  reply.payload.resize(sizeof(RegionAccessPayload) + access.count);
  std::memcpy(reply.payload.data(), &access, sizeof(access));
  return reply;
}

Result<Reply> Session::HandleRegionWrite(const Message& message) {
  UMDEV_ASSIGN_OR_RETURN(RegionAccessPayload access,
                         Load<RegionAccessPayload>(message, "REGION_WRITE"));
  const auto data = std::span(message.payload).subspan(sizeof(RegionAccessPayload));
  if (data.size() != access.count) {
    return Fail(EINVAL, fmt::format("REGION_WRITE: count {} but {} data bytes", access.count,
                                    data.size()));
  }
  if (access.count > limits_.max_data_xfer_size) {
    return Fail(E2BIG, "REGION_WRITE: count is over max_data_xfer_size");
  }
  if (access.count == 0) {
    UMDEV_TRY(file_->GetRegionInfo(access.region));
    Reply empty;
    AppendPod(empty.payload, access);
    return empty;
  }
  UMDEV_ASSIGN_OR_RETURN(size_t done, file_->RegionWrite(access.region, access.offset, data));
  access.count = static_cast<uint32_t>(std::min<size_t>(done, access.count));
  Reply reply;
  AppendPod(reply.payload, access);
  return reply;
}

Result<Reply> Session::HandleRegionWriteMulti(const Message& message) {
  UMDEV_ASSIGN_OR_RETURN(uint64_t count, Load<uint64_t>(message, "REGION_WRITE_MULTI"));
  if (count == 0 || count > kMaxWriteMultiEntries) {
    return Fail(EINVAL, fmt::format("REGION_WRITE_MULTI: {} writes (1..{})", count,
                                    kMaxWriteMultiEntries));
  }
  if (message.payload.size() != sizeof(uint64_t) + count * sizeof(WriteMultiEntry)) {
    return Fail(EINVAL, "REGION_WRITE_MULTI: size does not match the write count");
  }
  std::vector<WriteMultiEntry> entries(count);
  for (uint64_t i = 0; i < count; ++i) {
    entries[i] = *LoadPayload<WriteMultiEntry>(message.payload,
                                               sizeof(uint64_t) + i * sizeof(WriteMultiEntry));
    // All are checked before any is done, so a bad batch changes nothing.
    if (entries[i].count == 0 || entries[i].count > sizeof(entries[i].data)) {
      return Fail(EINVAL,
                  fmt::format("REGION_WRITE_MULTI: write {} has count {}", i, entries[i].count));
    }
  }
  for (const WriteMultiEntry& entry : entries) {
    const auto data = std::as_bytes(std::span(entry.data, entry.count));
    UMDEV_TRY(file_->RegionWrite(entry.region, entry.offset, data));
  }
  Reply reply;
  AppendPod(reply.payload, count);
  return reply;
}

}  // namespace umdev::vfio_user
