// The hostile-client suite's cases, by family: framing, VERSION, DMA, regions,
// IRQs, features, migration, reset, fds on every command, random frames.
#include "hostile_cases.h"

#include <linux/vfio.h>

#include <cstring>
#include <random>
#include <string_view>

#include <fmt/format.h>

namespace umdev::vfio_user::testing {
namespace {

constexpr uint32_t kMaxXfer = 1u << 20;  // The suite's server offers 1 MiB.

template <typename T>
void Put(std::vector<std::byte>& out, const T& value) {
  const auto* bytes = reinterpret_cast<const std::byte*>(&value);
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

template <typename... T>
std::vector<std::byte> Bytes(const T&... parts) {
  std::vector<std::byte> out;
  (Put(out, parts), ...);
  return out;
}

// A whole frame: header (msg_size computed unless |size| is given) + payload.
std::vector<std::byte> Raw(uint16_t command, const std::vector<std::byte>& payload,
                           uint32_t flags = kTypeCommand, int64_t size = -1) {
  Header header{};
  header.msg_id = 0x4242;
  header.command = command;
  header.msg_size = size >= 0 ? static_cast<uint32_t>(size)
                              : static_cast<uint32_t>(kHeaderSize + payload.size());
  header.flags = flags;
  std::vector<std::byte> out = Bytes(header);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

uint16_t Id(Command command) { return static_cast<uint16_t>(command); }

Frame Expect(Command command, std::vector<std::byte> payload, int error,
             FdKind fd = FdKind::kNone, int fd_count = 0) {
  return Frame{Raw(Id(command), payload), fd, fd == FdKind::kNone ? 0 : std::max(fd_count, 1),
               Outcome::kReply, error};
}

std::vector<std::byte> VersionBytes(std::string_view json, uint16_t major = 0) {
  std::vector<std::byte> out = Bytes(VersionPayload{major, 0});
  for (char c : json) out.push_back(static_cast<std::byte>(c));
  out.push_back(std::byte{0});
  return out;
}

struct Builder {
  std::vector<HostileCase> cases;
  void Add(std::string name, std::string device, std::vector<Frame> frames, bool negotiate = true) {
    cases.push_back(HostileCase{std::move(name), std::move(device), negotiate, std::move(frames)});
  }
  // The same frames against both devices.
  void Both(const std::string& name, const std::vector<Frame>& frames, bool negotiate = true) {
    Add(name + "_mtty", "mtty", frames, negotiate);
    Add(name + "_gpu", "gpu", frames, negotiate);
  }
};

void Framing(Builder& b) {
  for (uint32_t size : {0u, 1u, 8u, 15u}) {
    b.Both(fmt::format("Framing_MsgSize{}UnderTheHeaderDisconnects", size),
           {Frame{Raw(Id(Command::kDeviceGetInfo), {}, kTypeCommand, size), FdKind::kNone, 0,
                  Outcome::kDisconnect, 0}});
  }
  // Over the limit: the payload is read and dropped, the sender told E2BIG.
  const std::vector<std::byte> big(kMaxXfer + 4096);
  b.Both("Framing_OversizedMessageIsE2big",
         {Frame{Raw(Id(Command::kRegionWrite), big), FdKind::kNone, 0, Outcome::kReply, E2BIG},
          Expect(Command::kDeviceGetInfo, Bytes(DeviceInfoPayload{16}), 0)});
  b.Both("Framing_FourGigabyteClaimThenHangUp",
         {Frame{Raw(Id(Command::kRegionWrite), {}, kTypeCommand, 0xffffffffu), FdKind::kNone, 0,
                Outcome::kHangUp, 0}});
  std::vector<std::byte> half = Raw(Id(Command::kDeviceGetInfo), Bytes(DeviceInfoPayload{16}));
  half.resize(9);
  b.Both("Framing_HalfAHeaderThenHangUp", {Frame{half, FdKind::kNone, 0, Outcome::kHangUp, 0}});
  std::vector<std::byte> cut = Raw(Id(Command::kRegionWrite), std::vector<std::byte>(4096), kTypeCommand);
  cut.resize(kHeaderSize + 100);
  b.Both("Framing_PayloadCutShortThenHangUp", {Frame{cut, FdKind::kNone, 0, Outcome::kHangUp, 0}});
  for (uint32_t type : {2u, 3u, 7u, 15u}) {
    b.Both(fmt::format("Framing_MessageType{}IsEinval", type),
           {Frame{Raw(Id(Command::kDeviceGetInfo), Bytes(DeviceInfoPayload{16}), type),
                  FdKind::kNone, 0, Outcome::kReply, EINVAL}});
  }
  b.Both("Framing_UnsolicitedReplyIsDropped",
         {Frame{Raw(Id(Command::kDmaRead), Bytes(DmaAccessPayload{0, 4}), kTypeReply),
                FdKind::kNone, 0, Outcome::kNoReply, 0},
          Expect(Command::kDeviceGetInfo, Bytes(DeviceInfoPayload{16}), 0)});
  b.Both("Framing_UnsolicitedErrorReplyIsDropped",
         {Frame{Raw(Id(Command::kDmaWrite), {}, kTypeReply | kFlagError), FdKind::kNone, 0,
                Outcome::kNoReply, 0},
          Expect(Command::kDeviceGetInfo, Bytes(DeviceInfoPayload{16}), 0)});
  b.Both("Framing_ErrorFlagOnACommandIsIgnored",
         {Frame{Raw(Id(Command::kDeviceGetInfo), Bytes(DeviceInfoPayload{16}),
                    kTypeCommand | kFlagError),
                FdKind::kNone, 0, Outcome::kReply, 0}});
  b.Both("Framing_NoReplyFailureIsSilent",
         {Frame{Raw(Id(Command::kDeviceGetInfo), {}, kTypeCommand | kFlagNoReply), FdKind::kNone,
                0, Outcome::kNoReply, 0},
          Expect(Command::kDeviceGetInfo, Bytes(DeviceInfoPayload{16}), 0)});
  for (uint16_t command : {uint16_t{0}, uint16_t{21}, uint16_t{22}, uint16_t{100}, uint16_t{0xffff}}) {
    b.Both(fmt::format("Framing_UnknownCommand{}IsEinval", command),
           {Frame{Raw(command, Bytes(uint64_t{0})), FdKind::kNone, 0, Outcome::kReply, EINVAL}});
  }
  b.Both("Framing_ClientSentDmaReadIsEinval",
         {Expect(Command::kDmaRead, Bytes(DmaAccessPayload{0, 4}), EINVAL)});
  b.Both("Framing_ClientSentDmaWriteIsEinval",
         {Expect(Command::kDmaWrite, Bytes(DmaAccessPayload{0, 4}, uint32_t{0}), EINVAL)});
  b.Both("Framing_TooManyFdsIsEinval",
         {Expect(Command::kDmaMap, Bytes(DmaMapPayload{32, 1, 0, 0x10000, 0x1000}), EINVAL,
                 FdKind::kEventFd, 10)});
}

void Version(Builder& b) {
  const std::pair<const char*, const char*> refused[] = {
      {"NotJson", "{nope"},
      {"Array", "[]"},
      {"CapabilitiesNotAnObject", R"({"capabilities":3})"},
      {"MaxMsgFdsString", R"({"capabilities":{"max_msg_fds":"x"}})"},
      {"MaxMsgFdsNegative", R"({"capabilities":{"max_msg_fds":-1}})"},
      {"MaxXferZero", R"({"capabilities":{"max_data_xfer_size":0}})"},
      {"MaxXferFloat", R"({"capabilities":{"max_data_xfer_size":1.5}})"},
      {"PgsizesString", R"({"capabilities":{"pgsizes":"4096"}})"},
      {"DeepNesting", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"},
  };
  for (const auto& [name, json] : refused) {
    b.Both(fmt::format("Version_{}IsEinval", name),
           {Expect(Command::kVersion, VersionBytes(json), EINVAL),
            Expect(Command::kVersion, VersionBytes("{}"), 0)},
           /*negotiate=*/false);
  }
  b.Both("Version_MajorOneIsEnotsup",
         {Expect(Command::kVersion, VersionBytes("{}", 1), ENOTSUP)}, false);
  b.Both("Version_MajorMaxIsEnotsup",
         {Expect(Command::kVersion, VersionBytes("{}", 0xffff), ENOTSUP)}, false);
  std::vector<std::byte> unterminated = Bytes(VersionPayload{0, 0});
  unterminated.push_back(std::byte{'{'});
  unterminated.push_back(std::byte{'}'});
  b.Both("Version_UnterminatedJsonIsEinval",
         {Expect(Command::kVersion, unterminated, EINVAL)}, false);
  b.Both("Version_ShortPayloadIsEinval", {Expect(Command::kVersion, Bytes(uint16_t{0}), EINVAL)},
         false);
  b.Both("Version_SecondVersionIsEinval", {Expect(Command::kVersion, VersionBytes("{}"), EINVAL)});
  b.Both("Version_HugeMaxXferIsAccepted",
         {Expect(Command::kVersion,
                 VersionBytes(R"({"capabilities":{"max_data_xfer_size":18446744073709551615}})"),
                 0)},
         false);
  // Keys the server does not use are ignored, whatever their shape.
  b.Both("Version_MigrationNotAnObjectIsIgnored",
         {Expect(Command::kVersion, VersionBytes(R"({"capabilities":{"migration":1}})"), 0),
          Expect(Command::kVersion, VersionBytes("{}"), EINVAL)},
         false);
  b.Both("Version_UnknownKeysAreIgnored",
         {Expect(Command::kVersion, VersionBytes(R"({"capabilities":{"zzz":[1,2]},"x":null})"), 0)},
         false);
  const std::pair<Command, std::vector<std::byte>> before[] = {
      {Command::kDmaMap, Bytes(DmaMapPayload{32, 1, 0, 0x10000, 0x1000})},
      {Command::kDmaUnmap, Bytes(DmaUnmapPayload{24, 0, 0x10000, 0x1000})},
      {Command::kDeviceGetInfo, Bytes(DeviceInfoPayload{16})},
      {Command::kDeviceGetRegionInfo, Bytes(vfio_region_info{32})},
      {Command::kDeviceGetIrqInfo, Bytes(vfio_irq_info{16})},
      {Command::kDeviceSetIrqs, Bytes(IrqSetPayload{20, 0x21, 0, 0, 0})},
      {Command::kRegionRead, Bytes(RegionAccessPayload{0, 7, 4})},
      {Command::kRegionWrite, Bytes(RegionAccessPayload{0, 7, 4}, uint32_t{0})},
      {Command::kDeviceReset, {}},
      {Command::kDeviceFeature, Bytes(DeviceFeaturePayload{8, VFIO_DEVICE_FEATURE_GET | 1})},
      {Command::kMigDataRead, Bytes(MigDataPayload{8, 8})},
  };
  for (const auto& [command, payload] : before) {
    b.Both(fmt::format("Version_{}BeforeVersionIsEinval", CommandName(Id(command))),
           {Expect(command, payload, EINVAL), Expect(Command::kVersion, VersionBytes("{}"), 0)},
           false);
  }
}

void Dma(Builder& b) {
  const uint32_t rw = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
  const struct {
    const char* name;
    DmaMapPayload map;
    FdKind fd;
    int error;
  } maps[] = {
      {"SizeZero", {32, rw, 0, 0x10000, 0}, FdKind::kNone, EINVAL},
      {"UnalignedIova", {32, rw, 0, 0x10010, 0x1000}, FdKind::kNone, EINVAL},
      {"UnalignedSize", {32, rw, 0, 0x10000, 0x1001}, FdKind::kNone, EINVAL},
      {"UnalignedOffset", {32, rw, 0x10, 0x10000, 0x1000}, FdKind::kMemfd, EINVAL},
      {"IovaWraps", {32, rw, 0, 0xfffffffffffff000, 0x2000}, FdKind::kNone, EINVAL},
      {"OffsetWraps", {32, rw, 0xfffffffffffff000, 0x10000, 0x2000}, FdKind::kMemfd, EINVAL},
      {"NoRights", {32, 0, 0, 0x10000, 0x1000}, FdKind::kNone, EINVAL},
      {"UnknownFlags", {32, rw | 0x100, 0, 0x10000, 0x1000}, FdKind::kNone, EINVAL},
      {"ArgszShort", {31, rw, 0, 0x10000, 0x1000}, FdKind::kNone, EINVAL},
      {"PastTheFile", {32, rw, 0, 0x10000, 0x2000}, FdKind::kShortMemfd, EINVAL},
      {"OffsetAtTheEnd", {32, rw, 0x10000, 0x10000, 0x1000}, FdKind::kMemfd, EINVAL},
      {"Pipe", {32, rw, 0, 0x10000, 0x1000}, FdKind::kPipe, EINVAL},
      {"Socket", {32, rw, 0, 0x10000, 0x1000}, FdKind::kSocket, EINVAL},
      {"EventFd", {32, rw, 0, 0x10000, 0x1000}, FdKind::kEventFd, EINVAL},
      {"DevNull", {32, rw, 0, 0x10000, 0x1000}, FdKind::kDevNull, EINVAL},
      {"Epoll", {32, rw, 0, 0x10000, 0x1000}, FdKind::kEpoll, EINVAL},
      {"SealableButUnsealed", {32, rw, 0, 0x10000, 0x1000}, FdKind::kSealableMemfd, EINVAL},
      {"Sealed", {32, rw, 0, 0x10000, 0x10000}, FdKind::kSealedMemfd, 0},
      {"Unsealed", {32, rw, 0, 0x10000, 0x10000}, FdKind::kMemfd, 0},
      {"FdLess", {32, rw, 0, 0x10000, 0x100000}, FdKind::kNone, 0},
      {"ReadOnly", {32, VFIO_DMA_MAP_FLAG_READ, 0, 0x10000, 0x1000}, FdKind::kMemfd, 0},
      {"TopOfTheSpace", {32, rw, 0, 0xffffffffffff0000, 0x10000}, FdKind::kNone, 0},
  };
  for (const auto& m : maps) {
    b.Both(fmt::format("Dma_Map{}", m.name), {Expect(Command::kDmaMap, Bytes(m.map), m.error, m.fd)});
  }
  b.Both("Dma_MapTwoFdsIsEinval",
         {Expect(Command::kDmaMap, Bytes(DmaMapPayload{32, rw, 0, 0x10000, 0x1000}), EINVAL,
                 FdKind::kMemfd, 2)});
  b.Both("Dma_OverlapIsEexist",
         {Expect(Command::kDmaMap, Bytes(DmaMapPayload{32, rw, 0, 0x10000, 0x4000}), 0),
          Expect(Command::kDmaMap, Bytes(DmaMapPayload{32, rw, 0, 0x12000, 0x4000}), EEXIST)});
  const struct {
    const char* name;
    DmaUnmapPayload unmap;
    int error;
  } unmaps[] = {
      {"SizeZero", {24, 0, 0x10000, 0}, EINVAL},
      {"Unaligned", {24, 0, 0x10001, 0x1000}, EINVAL},
      {"Wraps", {24, 0, 0xfffffffffffff000, 0x2000}, EINVAL},
      {"DirtyBitmapFlag", {24, 1, 0x10000, 0x1000}, EINVAL},
      {"UnknownFlags", {24, 0x80, 0x10000, 0x1000}, EINVAL},
      {"AllWithARange", {24, VFIO_DMA_UNMAP_FLAG_ALL, 0x10000, 0x1000}, EINVAL},
      {"ArgszShort", {23, 0, 0x10000, 0x1000}, EINVAL},
      {"NothingMapped", {24, 0, 0x10000, 0x1000}, 0},
      {"All", {24, VFIO_DMA_UNMAP_FLAG_ALL, 0, 0}, 0},
  };
  for (const auto& u : unmaps) {
    b.Both(fmt::format("Dma_Unmap{}", u.name), {Expect(Command::kDmaUnmap, Bytes(u.unmap), u.error)});
  }
  b.Both("Dma_UnmapCuttingAMappingIsEinval",
         {Expect(Command::kDmaMap, Bytes(DmaMapPayload{32, rw, 0, 0x10000, 0x4000}), 0),
          Expect(Command::kDmaUnmap, Bytes(DmaUnmapPayload{24, 0, 0x11000, 0x1000}), EINVAL)});
  b.Both("Dma_MapPastMaxDmaMapsIsEnospc",
         {Expect(Command::kVersion, VersionBytes(R"({"capabilities":{"max_dma_maps":1}})"), 0),
          Expect(Command::kDmaMap, Bytes(DmaMapPayload{32, rw, 0, 0x10000, 0x1000}), 0),
          Expect(Command::kDmaMap, Bytes(DmaMapPayload{32, rw, 0, 0x20000, 0x1000}), ENOSPC)},
         false);
}

void Regions(Builder& b) {
  for (uint32_t index : {9u, 10u, 100u, 0xffffffffu}) {
    b.Both(fmt::format("Region_InfoIndex{}IsEinval", index),
           {Expect(Command::kDeviceGetRegionInfo, Bytes(vfio_region_info{32, 0, index}), EINVAL)});
    b.Both(fmt::format("Region_ReadIndex{}IsEinval", index),
           {Expect(Command::kRegionRead, Bytes(RegionAccessPayload{0, index, 4}), EINVAL)});
    b.Both(fmt::format("Region_WriteIndex{}IsEinval", index),
           {Expect(Command::kRegionWrite, Bytes(RegionAccessPayload{0, index, 4}, uint32_t{0}),
                   EINVAL)});
    b.Both(fmt::format("Region_IoFdsIndex{}IsEinval", index),
           {Expect(Command::kDeviceGetRegionIoFds, Bytes(RegionIoFdsPayload{16, 0, index, 0}),
                   EINVAL)});
  }
  const uint32_t config = VFIO_PCI_CONFIG_REGION_INDEX;
  b.Both("Region_ReadOverMaxXferIsE2big",
         {Expect(Command::kRegionRead, Bytes(RegionAccessPayload{0, config, kMaxXfer + 1}), E2BIG)});
  b.Both("Region_ReadHugeCountIsE2big",
         {Expect(Command::kRegionRead, Bytes(RegionAccessPayload{0, config, 0xffffffffu}), E2BIG)});
  b.Both("Region_ReadWithDataIsEinval",
         {Expect(Command::kRegionRead, Bytes(RegionAccessPayload{0, config, 4}, uint32_t{0}),
                 EINVAL)});
  b.Both("Region_WriteCountOverDataIsEinval",
         {Expect(Command::kRegionWrite, Bytes(RegionAccessPayload{0, config, 8}, uint32_t{0}),
                 EINVAL)});
  b.Both("Region_WriteCountUnderDataIsEinval",
         {Expect(Command::kRegionWrite, Bytes(RegionAccessPayload{0, config, 2}, uint32_t{0}),
                 EINVAL)});
  b.Both("Region_WriteHugeCountIsEinval",
         {Expect(Command::kRegionWrite,
                 Bytes(RegionAccessPayload{0, config, 0xffffffffu}, uint32_t{0}), EINVAL)});
  // Config space: 256 bytes on mtty (PCI), 4 KiB on the gpu (PCIe).
  for (const auto& [device, size] : {std::pair<const char*, uint64_t>{"mtty", 256},
                                     std::pair<const char*, uint64_t>{"gpu", 4096}}) {
    for (uint64_t offset : {size, size + 4096, uint64_t{1} << 40, ~uint64_t{0} - 3}) {
      b.Add(fmt::format("Region_ConfigReadAt{:x}IsEinval_{}", offset, device), device,
            {Expect(Command::kRegionRead, Bytes(RegionAccessPayload{offset, config, 4}), EINVAL)});
    }
    b.Add(fmt::format("Region_ConfigReadStraddlingTheEndIsEinval_{}", device), device,
          {Expect(Command::kRegionRead, Bytes(RegionAccessPayload{size - 2, config, 4}), EINVAL)});
    b.Add(fmt::format("Region_ConfigWriteStraddlingTheEndIsEinval_{}", device), device,
          {Expect(Command::kRegionWrite,
                  Bytes(RegionAccessPayload{size - 2, config, 4}, uint32_t{0}), EINVAL)});
  }
  b.Both("Region_ConfigReadOfZeroBytes",
         {Expect(Command::kRegionRead, Bytes(RegionAccessPayload{0, config, 0}), 0)});
  b.Both("Region_ConfigWriteOfZeroBytes",
         {Expect(Command::kRegionWrite, Bytes(RegionAccessPayload{0, config, 0}), 0)});
  b.Both("Region_ReadOfZeroBytesOfABadRegionIsEinval",
         {Expect(Command::kRegionRead, Bytes(RegionAccessPayload{0, 99, 0}), EINVAL)});
  b.Both("Region_InfoArgszShortIsEinval",
         {Expect(Command::kDeviceGetRegionInfo, Bytes(vfio_region_info{31, 0, config}), EINVAL)});
  b.Both("Region_IoFdsWithCountIsEinval",
         {Expect(Command::kDeviceGetRegionIoFds, Bytes(RegionIoFdsPayload{16, 0, 0, 5}), EINVAL)});
  b.Both("Region_IoFdsWithFlagsIsEinval",
         {Expect(Command::kDeviceGetRegionIoFds, Bytes(RegionIoFdsPayload{16, 1, 0, 0}), EINVAL)});
  // REGION_WRITE_MULTI.
  b.Both("Region_WriteMultiZeroIsEinval",
         {Expect(Command::kRegionWriteMulti, Bytes(uint64_t{0}), EINVAL)});
  b.Both("Region_WriteMultiOverTheMaxIsEinval",
         {Expect(Command::kRegionWriteMulti, Bytes(uint64_t{201}), EINVAL)});
  b.Both("Region_WriteMultiHugeCountIsEinval",
         {Expect(Command::kRegionWriteMulti, Bytes(~uint64_t{0}), EINVAL)});
  b.Both("Region_WriteMultiSizeMismatchIsEinval",
         {Expect(Command::kRegionWriteMulti, Bytes(uint64_t{2}, WriteMultiEntry{0x40, config, 4}),
                 EINVAL)});
  b.Both("Region_WriteMultiEntryOfZeroBytesIsEinval",
         {Expect(Command::kRegionWriteMulti, Bytes(uint64_t{1}, WriteMultiEntry{0x40, config, 0}),
                 EINVAL)});
  b.Both("Region_WriteMultiEntryOfNineBytesIsEinval",
         {Expect(Command::kRegionWriteMulti, Bytes(uint64_t{1}, WriteMultiEntry{0x40, config, 9}),
                 EINVAL)});
  b.Both("Region_WriteMultiBadRegionIsEinval",
         {Expect(Command::kRegionWriteMulti, Bytes(uint64_t{1}, WriteMultiEntry{0, 77, 4}), EINVAL)});
}

void Irqs(Builder& b) {
  constexpr uint32_t kTrigger = VFIO_IRQ_SET_ACTION_TRIGGER;
  constexpr uint32_t kNone = VFIO_IRQ_SET_DATA_NONE, kBool = VFIO_IRQ_SET_DATA_BOOL,
                     kEvent = VFIO_IRQ_SET_DATA_EVENTFD;
  for (uint32_t index : {9u, 100u, 0xffffffffu}) {
    b.Both(fmt::format("Irq_InfoIndex{}IsEinval", index),
           {Expect(Command::kDeviceGetIrqInfo, Bytes(vfio_irq_info{16, 0, index}), EINVAL)});
    b.Both(fmt::format("Irq_SetIndex{}IsEinval", index),
           {Expect(Command::kDeviceSetIrqs, Bytes(IrqSetPayload{20, kNone | kTrigger, index, 0, 1}),
                   EINVAL)});
  }
  for (uint32_t count : {0xffffffffu, 0x7fffffffu, 0x10000u}) {
    for (uint32_t index : {0u, 1u, 2u}) {
      b.Both(fmt::format("Irq_Eventfd{}VectorsOfIndex{}IsEinval", count, index),
             {Expect(Command::kDeviceSetIrqs, Bytes(IrqSetPayload{20, kEvent | kTrigger, index, 1, count}),
                     EINVAL)});
    }
  }
  b.Both("Irq_StartPastTheEndIsEinval",
         {Expect(Command::kDeviceSetIrqs, Bytes(IrqSetPayload{20, kNone | kTrigger, 0, 0xffffffff, 1}),
                 EINVAL)});
  b.Both("Irq_TwoDataTypesIsEinval",
         {Expect(Command::kDeviceSetIrqs, Bytes(IrqSetPayload{20, kNone | kBool | kTrigger, 0, 0, 1}),
                 EINVAL)});
  b.Both("Irq_TwoActionsIsEinval",
         {Expect(Command::kDeviceSetIrqs,
                 Bytes(IrqSetPayload{20, kNone | kTrigger | VFIO_IRQ_SET_ACTION_MASK, 0, 0, 1}),
                 EINVAL)});
  b.Both("Irq_UnknownFlagsIsEinval",
         {Expect(Command::kDeviceSetIrqs, Bytes(IrqSetPayload{20, kNone | kTrigger | 0x1000, 0, 0, 1}),
                 EINVAL)});
  b.Both("Irq_BoolCountMismatchIsEinval",
         {Expect(Command::kDeviceSetIrqs,
                 Bytes(IrqSetPayload{20, kBool | kTrigger, 0, 0, 1}, uint16_t{1}), EINVAL)});
  b.Both("Irq_BoolHugeCountIsEinval",
         {Expect(Command::kDeviceSetIrqs,
                 Bytes(IrqSetPayload{20, kBool | kTrigger, 0, 0, 0xffffffff}, uint8_t{1}), EINVAL)});
  b.Both("Irq_NoneWithDataIsEinval",
         {Expect(Command::kDeviceSetIrqs, Bytes(IrqSetPayload{20, kNone | kTrigger, 0, 0, 1}, uint8_t{1}),
                 EINVAL)});
  b.Both("Irq_ArgszShortIsEinval",
         {Expect(Command::kDeviceSetIrqs, Bytes(IrqSetPayload{19, kNone | kTrigger, 0, 0, 1}), EINVAL)});
  b.Both("Irq_FdCountMismatchIsEinval",
         {Expect(Command::kDeviceSetIrqs, Bytes(IrqSetPayload{20, kEvent | kTrigger, 0, 0, 1}),
                 EINVAL, FdKind::kEventFd, 2)});
  const std::pair<const char*, FdKind> not_eventfds[] = {
      {"Pipe", FdKind::kPipe},     {"Socket", FdKind::kSocket}, {"Memfd", FdKind::kMemfd},
      {"Epoll", FdKind::kEpoll},   {"DevNull", FdKind::kDevNull},
  };
  for (const auto& [name, kind] : not_eventfds) {
    b.Both(fmt::format("Irq_Intx{}TriggerIsEinval", name),
           {Expect(Command::kDeviceSetIrqs, Bytes(IrqSetPayload{20, kEvent | kTrigger, 0, 0, 1}),
                   EINVAL, kind)});
  }
  b.Both("Irq_IntxEventfdTriggerIsTaken",
         {Expect(Command::kDeviceSetIrqs, Bytes(IrqSetPayload{20, kEvent | kTrigger, 0, 0, 1}), 0,
                 FdKind::kEventFd),
          Expect(Command::kDeviceSetIrqs, Bytes(IrqSetPayload{20, kNone | kTrigger, 0, 0, 1}), 0),
          Expect(Command::kDeviceSetIrqs, Bytes(IrqSetPayload{20, kNone | kTrigger, 0, 0, 0}), 0)});
  b.Both("Irq_InfoArgszShortIsEinval",
         {Expect(Command::kDeviceGetIrqInfo, Bytes(vfio_irq_info{15, 0, 0}), EINVAL)});
}

void FeaturesAndMigration(Builder& b) {
  const uint32_t get = VFIO_DEVICE_FEATURE_GET, set = VFIO_DEVICE_FEATURE_SET,
                 probe = VFIO_DEVICE_FEATURE_PROBE;
  b.Both("Feature_UnknownFeatureIsEnotty",
         {Expect(Command::kDeviceFeature, Bytes(DeviceFeaturePayload{8, get | 0x7777}), ENOTTY)});
  b.Both("Feature_UnknownFlagsIsEinval",
         {Expect(Command::kDeviceFeature, Bytes(DeviceFeaturePayload{8, get | 0x40000000 | 1}),
                 EINVAL)});
  b.Both("Feature_NeitherGetNorSetIsEinval",
         {Expect(Command::kDeviceFeature,
                 Bytes(DeviceFeaturePayload{16, VFIO_DEVICE_FEATURE_MIGRATION}), EINVAL)});
  b.Both("Feature_MigrationSetIsEinval",
         {Expect(Command::kDeviceFeature,
                 Bytes(DeviceFeaturePayload{16, set | VFIO_DEVICE_FEATURE_MIGRATION}, uint64_t{0}),
                 EINVAL)});
  b.Both("Feature_MigrationGetArgszShortIsEinval",
         {Expect(Command::kDeviceFeature,
                 Bytes(DeviceFeaturePayload{8, get | VFIO_DEVICE_FEATURE_MIGRATION}), EINVAL)});
  b.Both("Feature_MigrationProbe",
         {Expect(Command::kDeviceFeature,
                 Bytes(DeviceFeaturePayload{16, probe | get | VFIO_DEVICE_FEATURE_MIGRATION}), 0)});
  b.Both("Feature_StateSetWithoutDataIsEinval",
         {Expect(Command::kDeviceFeature,
                 Bytes(DeviceFeaturePayload{16, set | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE}), EINVAL)});
  // 0 is ERROR, never a target; the others are no state at all.
  for (uint32_t state : {0u, 9u, 100u, 0xffffffffu}) {
    b.Both(fmt::format("Feature_StateSetTo{}IsRefused", state),
           {Expect(Command::kDeviceFeature,
                   Bytes(DeviceFeaturePayload{16, set | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE},
                         state, int32_t{-1}),
                   EINVAL)});
  }
  b.Both("Feature_LoggingStartIsEnottyWithoutDirtyLogging",
         {Expect(Command::kDeviceFeature,
                 Bytes(DeviceFeaturePayload{8, set | VFIO_DEVICE_FEATURE_DMA_LOGGING_START}), ENOTTY)});
  b.Both("Feature_LoggingStartWithBadRangesIsEnottyWithoutDirtyLogging",
         {Expect(Command::kDeviceFeature,
                 Bytes(DeviceFeaturePayload{32, set | VFIO_DEVICE_FEATURE_DMA_LOGGING_START},
                       uint64_t{4096}, uint32_t{1000000}, uint32_t{0}),
                 ENOTTY)});
  b.Both("Feature_LoggingReportIsEnottyWithoutDirtyLogging",
         {Expect(Command::kDeviceFeature,
                 Bytes(DeviceFeaturePayload{8, get | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT}),
                 ENOTTY)});
  b.Both("Feature_ShortPayloadIsEinval", {Expect(Command::kDeviceFeature, Bytes(uint32_t{8}), EINVAL)});
  // Migration data outside a migration state.
  b.Both("Migration_DataReadWhileRunningIsRefused",
         {Frame{Raw(Id(Command::kMigDataRead), Bytes(MigDataPayload{8 + 64, 64})), FdKind::kNone, 0,
                Outcome::kAnything, 0}});
  b.Both("Migration_DataReadOverMaxXferIsE2big",
         {Expect(Command::kMigDataRead, Bytes(MigDataPayload{0xffffffff, 0xffffffff}), E2BIG)});
  b.Both("Migration_DataReadArgszShortIsEinval",
         {Expect(Command::kMigDataRead, Bytes(MigDataPayload{8, 64}), EINVAL)});
  b.Both("Migration_DataReadLongPayloadIsEinval",
         {Expect(Command::kMigDataRead, Bytes(MigDataPayload{72, 64}, uint32_t{0}), EINVAL)});
  b.Both("Migration_DataWriteSizeMismatchIsEinval",
         {Expect(Command::kMigDataWrite, Bytes(MigDataPayload{16, 64}, uint64_t{0}), EINVAL)});
  b.Both("Migration_DataWriteOverMaxXferIsRefused",
         {Expect(Command::kMigDataWrite, Bytes(MigDataPayload{16, 0xffffffff}, uint64_t{0}), EINVAL)});
  b.Both("Migration_DataWriteWhileRunningIsRefused",
         {Frame{Raw(Id(Command::kMigDataWrite), Bytes(MigDataPayload{16, 8}, uint64_t{0})),
                FdKind::kNone, 0, Outcome::kAnything, 0}});
  // Reset, with and without a payload.
  b.Both("Reset_Plain", {Expect(Command::kDeviceReset, {}, 0)});
  b.Both("Reset_Twice", {Expect(Command::kDeviceReset, {}, 0), Expect(Command::kDeviceReset, {}, 0)});
  b.Both("Reset_WithMappingsLive",
         {Expect(Command::kDmaMap, Bytes(DmaMapPayload{32, 3, 0, 0x10000, 0x10000}), 0, FdKind::kMemfd),
          Expect(Command::kDeviceReset, {}, 0)});
}

void FdsOnEveryCommand(Builder& b) {
  const std::pair<Command, std::vector<std::byte>> commands[] = {
      {Command::kDmaUnmap, Bytes(DmaUnmapPayload{24, 0, 0x10000, 0x1000})},
      {Command::kDeviceGetInfo, Bytes(DeviceInfoPayload{16})},
      {Command::kDeviceGetRegionInfo, Bytes(vfio_region_info{32})},
      {Command::kDeviceGetRegionIoFds, Bytes(RegionIoFdsPayload{16, 0, 0, 0})},
      {Command::kDeviceGetIrqInfo, Bytes(vfio_irq_info{16})},
      {Command::kRegionRead, Bytes(RegionAccessPayload{0, 7, 4})},
      {Command::kRegionWrite, Bytes(RegionAccessPayload{0x40, 7, 4}, uint32_t{0})},
      {Command::kRegionWriteMulti, Bytes(uint64_t{1}, WriteMultiEntry{0x40, 7, 4})},
      {Command::kDeviceReset, {}},
      {Command::kDeviceFeature, Bytes(DeviceFeaturePayload{16, VFIO_DEVICE_FEATURE_GET | 1})},
      {Command::kMigDataRead, Bytes(MigDataPayload{72, 64})},
      {Command::kVersion, VersionBytes("{}")},
  };
  for (const auto& [command, payload] : commands) {
    for (FdKind kind : {FdKind::kEventFd, FdKind::kMemfd}) {
      b.Both(fmt::format("Fds_{}With{}IsEinval", CommandName(Id(command)),
                         kind == FdKind::kEventFd ? "AnEventfd" : "AMemfd"),
             {Expect(command, payload, EINVAL, kind)});
    }
  }
}

void RandomFrames(Builder& b) {
  std::mt19937_64 random(20261206);
  for (int n = 0; n < 24; ++n) {
    std::vector<Frame> frames;
    for (int f = 0; f < 16; ++f) {
      const uint16_t command = static_cast<uint16_t>(random() % 22);
      std::vector<std::byte> payload(random() % 96);
      for (auto& byte : payload) byte = static_cast<std::byte>(random());
      const uint32_t flags = static_cast<uint32_t>(random() % 4 == 0 ? random() : 0) & 0x3f;
      const FdKind fd = random() % 5 == 0 ? FdKind::kEventFd : FdKind::kNone;
      frames.push_back(Frame{Raw(command, payload, flags), fd, fd == FdKind::kNone ? 0 : 1,
                             Outcome::kAnything, 0});
    }
    b.Add(fmt::format("Random_Sequence{}", n), n % 2 ? "gpu" : "mtty", std::move(frames));
  }
}

}  // namespace

std::vector<HostileCase> AllHostileCases() {
  Builder b;
  Framing(b);
  Version(b);
  Dma(b);
  Regions(b);
  Irqs(b);
  FeaturesAndMigration(b);
  FdsOnEveryCommand(b);
  RandomFrames(b);
  return std::move(b.cases);
}

}  // namespace umdev::vfio_user::testing
