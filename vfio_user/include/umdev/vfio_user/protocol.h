// The vfio-user wire format (spec 0.9.2, as QEMU >= 10.1 speaks it): the
// message header, each command's fixed payload, and the VERSION capabilities.
// All fields are host-endian; payload structs are copied in and out with
// memcpy, never cast in place, so their alignment in a buffer does not matter.
#pragma once

#include <linux/vfio.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "umdev/common/error.h"

namespace umdev::vfio_user {

enum class Command : uint16_t {
  kVersion = 1,
  kDmaMap = 2,
  kDmaUnmap = 3,
  kDeviceGetInfo = 4,
  kDeviceGetRegionInfo = 5,
  kDeviceGetRegionIoFds = 6,
  kDeviceGetIrqInfo = 7,
  kDeviceSetIrqs = 8,
  kRegionRead = 9,
  kRegionWrite = 10,
  kDmaRead = 11,
  kDmaWrite = 12,
  kDeviceReset = 13,
  // 14 was DIRTY_PAGES, removed in 0.9.2; the number is not reused.
  kRegionWriteMulti = 15,
  kDeviceFeature = 16,
  kMigDataRead = 17,
  kMigDataWrite = 18,
};

// "VERSION" etc., or "UNKNOWN(n)".
std::string CommandName(uint16_t command);

// Header flags.
inline constexpr uint32_t kFlagTypeMask = 0xf;
inline constexpr uint32_t kTypeCommand = 0x0;
inline constexpr uint32_t kTypeReply = 0x1;
inline constexpr uint32_t kFlagNoReply = 0x10;
inline constexpr uint32_t kFlagError = 0x20;

struct Header {
  uint16_t msg_id = 0;
  uint16_t command = 0;
  uint32_t msg_size = 0;  // The whole message, header included.
  uint32_t flags = 0;
  uint32_t error_no = 0;  // Replies with kFlagError only.
};
static_assert(sizeof(Header) == 16);
inline constexpr size_t kHeaderSize = sizeof(Header);

// The protocol version we speak: QEMU proposes 0.0 and accepts minor <= 0.
inline constexpr uint16_t kVersionMajor = 0;
inline constexpr uint16_t kVersionMinor = 0;

struct VersionPayload {  // Followed by NUL-terminated JSON.
  uint16_t major = 0;
  uint16_t minor = 0;
};
static_assert(sizeof(VersionPayload) == 4);

struct DmaMapPayload {
  uint32_t argsz = 0;
  uint32_t flags = 0;  // VFIO_DMA_MAP_FLAG_READ | _WRITE.
  uint64_t offset = 0;  // Into the passed fd; 0 without one.
  uint64_t address = 0;
  uint64_t size = 0;
};
static_assert(sizeof(DmaMapPayload) == 32);

struct DmaUnmapPayload {
  uint32_t argsz = 0;
  uint32_t flags = 0;  // VFIO_DMA_UNMAP_FLAG_ALL (QEMU's unmap-all), else 0.
  uint64_t address = 0;
  uint64_t size = 0;
};
static_assert(sizeof(DmaUnmapPayload) == 24);

// vfio-user's device info is the kernel's struct before cap_offset was added.
struct DeviceInfoPayload {
  uint32_t argsz = 0;
  uint32_t flags = 0;
  uint32_t num_regions = 0;
  uint32_t num_irqs = 0;
};
static_assert(sizeof(DeviceInfoPayload) == 16);

// GET_REGION_INFO and GET_IRQ_INFO use the kernel's structs.
static_assert(sizeof(vfio_region_info) == 32);
static_assert(sizeof(vfio_irq_info) == 16);

// SET_IRQS: the kernel's vfio_irq_set without its flexible data member;
// DATA_BOOL bytes follow it, DATA_EVENTFD fds come as SCM_RIGHTS.
struct IrqSetPayload {
  uint32_t argsz = 0;
  uint32_t flags = 0;
  uint32_t index = 0;
  uint32_t start = 0;
  uint32_t count = 0;
};
static_assert(sizeof(IrqSetPayload) == sizeof(vfio_irq_set));

struct RegionIoFdsPayload {
  uint32_t argsz = 0;
  uint32_t flags = 0;
  uint32_t index = 0;
  uint32_t count = 0;
};
static_assert(sizeof(RegionIoFdsPayload) == 16);

// REGION_READ / REGION_WRITE: followed by |count| data bytes where data flows.
struct RegionAccessPayload {
  uint64_t offset = 0;
  uint32_t region = 0;
  uint32_t count = 0;
};
static_assert(sizeof(RegionAccessPayload) == 16);

// DMA_READ / DMA_WRITE (server to client), spec layout: QEMU 11.1 uses it.
struct DmaAccessPayload {
  uint64_t address = 0;
  uint64_t count = 0;
};
static_assert(sizeof(DmaAccessPayload) == 16);

// REGION_WRITE_MULTI: a u64 count, then this many entries.
struct WriteMultiEntry {
  uint64_t offset = 0;
  uint32_t region = 0;
  uint32_t count = 0;  // 1..8.
  uint8_t data[8] = {};
};
static_assert(sizeof(WriteMultiEntry) == 24);
inline constexpr uint64_t kMaxWriteMultiEntries = 200;

// DEVICE_FEATURE: the kernel's vfio_device_feature without its trailing data.
struct DeviceFeaturePayload {
  uint32_t argsz = 0;
  uint32_t flags = 0;  // Feature index in bits 0-15, GET/SET/PROBE above.
};
static_assert(sizeof(DeviceFeaturePayload) == 8);

// The DMA logging features' data, inline where the kernel passes pointers:
// DMA_LOGGING_START is a control followed by |num_ranges| ranges;
// DMA_LOGGING_REPORT a report, answered with it and the bitmap.
struct DmaLoggingControl {
  uint64_t page_size = 0;
  uint32_t num_ranges = 0;
  uint32_t reserved = 0;
};
static_assert(sizeof(DmaLoggingControl) == 16);
struct DmaLoggingRange {
  uint64_t iova = 0;
  uint64_t length = 0;
};
static_assert(sizeof(DmaLoggingRange) == 16);
struct DmaLoggingReport {
  uint64_t iova = 0;
  uint64_t length = 0;
  uint64_t page_size = 0;
};
static_assert(sizeof(DmaLoggingReport) == 24);

// MIG_DATA_READ / MIG_DATA_WRITE.
struct MigDataPayload {
  uint32_t argsz = 0;
  uint32_t size = 0;
};
static_assert(sizeof(MigDataPayload) == 8);

// The VERSION capabilities. Defaults are the spec's for an absent key, except
// where noted.
struct Capabilities {
  uint32_t max_msg_fds = 1;
  uint64_t max_data_xfer_size = 1u << 20;
  uint64_t pgsizes = 4096;
  uint32_t max_dma_maps = 65535;
  bool write_multiple = false;
  bool twin_socket = false;
};

// Parses a VERSION payload's JSON part (|json| must end in NUL). Unknown keys
// and the legacy "migration" object are tolerated. Errors: EINVAL no NUL
// terminator, not JSON, or a known key of the wrong type.
Result<Capabilities> ParseCapabilities(std::span<const std::byte> json);

// The NUL-terminated JSON a VERSION reply carries. |write_multiple| and
// |twin_socket| appear only when true.
std::string FormatCapabilities(const Capabilities& caps);

// Plain-old-data payload helpers.
template <typename T>
std::optional<T> LoadPayload(std::span<const std::byte> bytes, size_t offset = 0);

}  // namespace umdev::vfio_user

#include "umdev/vfio_user/protocol_inl.h"
