// The mtty migration stream codec: explicit little-endian fields, no struct dumps.
#include "umdev/vendor/serial/migration_stream.h"

#include <fmt/format.h>

namespace umdev::vendor::serial {
namespace {

constexpr uint8_t kStatusOverrun = 0x01;
constexpr uint8_t kStatusThre = 0x02;
constexpr uint8_t kStatusIdle = 0x04;
constexpr uint8_t kFcrBits = fcr::kEnable | fcr::kDmaMode | fcr::kTriggerMask;

class Writer {
 public:
  explicit Writer(std::vector<std::byte>& out) : out_(out) {}
  void U8(uint8_t v) { out_.push_back(std::byte{v}); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }

 private:
  void Le(uint64_t v, unsigned bytes) {
    for (unsigned i = 0; i < bytes; ++i) U8(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<std::byte>& out_;
};

class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  uint8_t U8() { return std::to_integer<uint8_t>(in_[pos_++]); }
  uint16_t U16() { return static_cast<uint16_t>(Le(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Le(4)); }
  uint64_t U64() { return Le(8); }

 private:
  uint64_t Le(unsigned bytes) {
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; ++i) v |= uint64_t{U8()} << (8 * i);
    return v;
  }
  std::span<const std::byte> in_;
  size_t pos_ = 0;
};

void WriteFifo(Writer& w, const ByteFifo& fifo) {
  w.U8(static_cast<uint8_t>(fifo.size()));
  for (size_t i = 0; i < ByteFifo::kCapacity; ++i) w.U8(i < fifo.size() ? fifo.At(i) : 0);
}

Result<void> ReadFifo(Reader& r, ByteFifo& fifo, size_t limit, unsigned port, const char* name) {
  const uint8_t count = r.U8();
  if (count > limit) {
    return Fail(EINVAL, fmt::format("migration stream: port {} {} count {} exceeds {}", port,
                                    name, count, limit));
  }
  fifo.Clear();
  for (size_t i = 0; i < ByteFifo::kCapacity; ++i) {
    const uint8_t byte = r.U8();
    if (i < count) fifo.Push(byte);
  }
  return {};
}

Result<PortSnapshot> DecodePort(Reader& r, unsigned port) {
  PortSnapshot snap;
  UartState& s = snap.uart;
  s.ier = r.U8();
  s.lcr = r.U8();
  s.mcr = r.U8();
  s.fcr = r.U8();
  s.scr = r.U8();
  s.msr_inputs = r.U8();
  s.msr_deltas = r.U8();
  const uint8_t status = r.U8();
  s.divisor = r.U16();
  const uint8_t kind = r.U8();
  const auto bad = [port](const char* what) {
    return Fail(EINVAL, fmt::format("migration stream: port {}: {}", port, what));
  };
  if ((s.ier & 0xf0) != 0) return bad("reserved IER bits set");
  if ((s.mcr & ~mcr::kWritable) != 0) return bad("reserved MCR bits set");
  if ((s.fcr & ~kFcrBits) != 0 || (s.fcr != 0 && (s.fcr & fcr::kEnable) == 0)) {
    return bad("FCR bits set with the FIFO off");
  }
  if ((s.msr_inputs & ~msr::kInputs) != 0 || (s.msr_deltas & ~msr::kDeltas) != 0) {
    return bad("MSR fields out of range");
  }
  if ((status & ~(kStatusOverrun | kStatusThre | kStatusIdle)) != 0) {
    return bad("unknown status bits");
  }
  if (kind > static_cast<uint8_t>(FarEndKind::kSocket)) return bad("unknown far-end kind");
  s.overrun = (status & kStatusOverrun) != 0;
  s.thre_pending = (status & kStatusThre) != 0;
  s.line_idle = (status & kStatusIdle) != 0;
  snap.far_end = static_cast<FarEndKind>(kind);
  const size_t limit = (s.fcr & fcr::kEnable) != 0 ? ByteFifo::kCapacity : 1;
  UMDEV_TRY(ReadFifo(r, s.rx, limit, port, "RX"));
  UMDEV_TRY(ReadFifo(r, s.tx, limit, port, "TX"));
  if (r.U8() != 0 || r.U8() != 0 || r.U8() != 0) return bad("reserved bytes set");
  return snap;
}

}  // namespace

std::vector<std::byte> EncodeStreamHeader(uint32_t ports) {
  std::vector<std::byte> out;
  Writer w(out);
  w.U64(kStreamMagic);
  w.U32(kStreamVersion);
  w.U32(ports);
  w.U32(kStreamPortSize);
  w.U32(0);
  return out;
}

std::vector<std::byte> EncodePorts(std::span<const PortSnapshot> ports) {
  std::vector<std::byte> out;
  Writer w(out);
  for (const PortSnapshot& port : ports) {
    const UartState& s = port.uart;
    w.U8(s.ier);
    w.U8(s.lcr);
    w.U8(s.mcr);
    w.U8(s.fcr);
    w.U8(s.scr);
    w.U8(s.msr_inputs);
    w.U8(s.msr_deltas);
    w.U8(static_cast<uint8_t>((s.overrun ? kStatusOverrun : 0) | (s.thre_pending ? kStatusThre : 0) |
                              (s.line_idle ? kStatusIdle : 0)));
    w.U16(s.divisor);
    w.U8(static_cast<uint8_t>(port.far_end));
    WriteFifo(w, s.rx);
    WriteFifo(w, s.tx);
    w.U8(0);
    w.U8(0);
    w.U8(0);
  }
  return out;
}

Result<void> ValidateStreamHeader(std::span<const std::byte> header, uint32_t ports) {
  if (header.size() < kStreamHeaderSize) return Fail(EINVAL, "migration stream: short header");
  Reader r(header);
  const uint64_t magic = r.U64();
  const uint32_t version = r.U32();
  const uint32_t count = r.U32();
  const uint32_t record = r.U32();
  const uint32_t flags = r.U32();
  if (magic != kStreamMagic) return Fail(EFAULT, "migration stream: bad magic");
  if (version != kStreamVersion) {
    return Fail(EFAULT, fmt::format("migration stream: version {} (this device reads {})",
                                    version, kStreamVersion));
  }
  if (count != ports) {
    return Fail(EFAULT, fmt::format("migration stream: {} ports for a device with {}", count,
                                    ports));
  }
  if (record != kStreamPortSize || flags != 0) {
    return Fail(EFAULT, "migration stream: unknown record size or flags");
  }
  return {};
}

Result<std::vector<PortSnapshot>> DecodeStream(std::span<const std::byte> stream,
                                               std::span<const FarEndKind> far_ends) {
  if (stream.size() != StreamSize(far_ends.size())) {
    return Fail(EINVAL, fmt::format("migration stream: {} bytes, expected {}", stream.size(),
                                    StreamSize(far_ends.size())));
  }
  UMDEV_TRY(ValidateStreamHeader(stream, static_cast<uint32_t>(far_ends.size())));
  Reader r(stream.subspan(kStreamHeaderSize));
  std::vector<PortSnapshot> ports;
  for (unsigned i = 0; i < far_ends.size(); ++i) {
    UMDEV_ASSIGN_OR_RETURN(PortSnapshot port, DecodePort(r, i));
    if (port.far_end != far_ends[i]) {
      return Fail(EINVAL, fmt::format("migration stream: port {} far end differs from this "
                                      "device's",
                                      i));
    }
    ports.push_back(std::move(port));
  }
  return ports;
}

}  // namespace umdev::vendor::serial
