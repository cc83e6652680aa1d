// DescribePci: lspci -vv's layout, without its name database.
#include "umdev/probe/pci_format.h"

#include <fmt/format.h>

#include <array>
#include <cstring>
#include <optional>

namespace umdev::probe {
namespace {

using Json = nlohmann::json;

class Config {
 public:
  explicit Config(std::span<const std::byte> bytes) : bytes_(bytes) {}
  size_t size() const { return bytes_.size(); }
  bool Has(size_t offset, size_t width) const {
    return offset <= bytes_.size() && width <= bytes_.size() - offset;
  }
  uint32_t Read(size_t offset, size_t width) const {
    if (!Has(offset, width)) return 0;
    uint32_t value = 0;
    std::memcpy(&value, bytes_.data() + offset, width);  // Host-endian = little on x86.
    return value;
  }
  uint8_t U8(size_t offset) const { return static_cast<uint8_t>(Read(offset, 1)); }
  uint16_t U16(size_t offset) const { return static_cast<uint16_t>(Read(offset, 2)); }
  uint32_t U32(size_t offset) const { return Read(offset, 4); }

 private:
  std::span<const std::byte> bytes_;
};

char Flag(uint32_t value, unsigned bit) { return ((value >> bit) & 1) != 0 ? '+' : '-'; }

std::string ClassName(uint32_t base) {
  static constexpr std::array<const char*, 20> kNames = {
      "Unclassified device", "Mass storage controller", "Network controller",
      "Display controller", "Multimedia controller", "Memory controller", "Bridge",
      "Communication controller", "Generic system peripheral", "Input device controller",
      "Docking station", "Processor", "Serial bus controller", "Wireless controller",
      "Intelligent controller", "Satellite communications controller", "Encryption controller",
      "Signal processing controller", "Processing accelerators", "Non-Essential Instrumentation"};
  if (base < kNames.size()) return kNames[base];
  return base == 0xff ? "Unassigned class" : "Unknown class";
}

const PciRegion* FindRegion(std::span<const PciRegion> regions, uint32_t index) {
  for (const PciRegion& region : regions) {
    if (region.index == index) return &region;
  }
  return nullptr;
}

struct Out {
  std::vector<std::string> lines;
  void Add(int depth, std::string text) { lines.push_back(std::string(depth, '\t') + text); }
};

void DescribeBars(const Config& config, std::span<const PciRegion> regions, unsigned count,
                  Out& out, Json& json) {
  json["bars"] = Json::array();
  for (unsigned i = 0; i < count; ++i) {
    const uint32_t bar = config.U32(0x10 + 4 * i);
    const PciRegion* region = FindRegion(regions, i);
    const uint64_t size = region != nullptr ? region->size : 0;
    if (bar == 0 && size == 0) continue;
    Json entry = {{"index", i}, {"size", size}};
    std::string sized = size != 0 ? " [size=" + FormatSize(size) + "]" : "";
    if ((bar & 1) != 0) {
      const uint32_t address = bar & ~0x3u;
      entry["type"] = "io";
      entry["address"] = address;
      out.Add(1, fmt::format("Region {}: I/O ports at {}{}", i,
                             address != 0 ? fmt::format("{:04x}", address) : "<unassigned>",
                             sized));
    } else {
      const bool is64 = ((bar >> 1) & 3) == 2;
      const bool prefetch = (bar & 8) != 0;
      uint64_t address = bar & ~0xfull;
      if (is64) address |= static_cast<uint64_t>(config.U32(0x10 + 4 * (i + 1))) << 32;
      entry["type"] = "memory";
      entry["bits"] = is64 ? 64 : 32;
      entry["prefetchable"] = prefetch;
      entry["address"] = address;
      out.Add(1, fmt::format("Region {}: Memory at {} ({}, {}){}", i,
                             address != 0 ? fmt::format("{:x}", address) : "<unassigned>",
                             is64 ? "64-bit" : "32-bit",
                             prefetch ? "prefetchable" : "non-prefetchable", sized));
      if (is64) ++i;  // The upper half is the next register.
    }
    json["bars"].push_back(entry);
  }
}

void DescribePm(const Config& c, size_t at, Out& out, Json& cap) {
  static constexpr std::array<int, 8> kAux = {0, 55, 100, 160, 220, 270, 320, 375};
  const uint16_t pmc = c.U16(at + 2);
  const uint16_t csr = c.U16(at + 4);
  cap["version"] = pmc & 7;
  cap["pmc"] = pmc;
  cap["pmcsr"] = csr;
  out.Add(1, fmt::format("Capabilities: [{:02x}] Power Management version {}", at, pmc & 7));
  out.Add(2, fmt::format("Flags: PMEClk{} DSI{} D1{} D2{} AuxCurrent={}mA "
                         "PME(D0{},D1{},D2{},D3hot{},D3cold{})",
                         Flag(pmc, 3), Flag(pmc, 5), Flag(pmc, 9), Flag(pmc, 10),
                         kAux[(pmc >> 6) & 7], Flag(pmc, 11), Flag(pmc, 12), Flag(pmc, 13),
                         Flag(pmc, 14), Flag(pmc, 15)));
  out.Add(2, fmt::format("Status: D{} NoSoftRst{} PME-Enable{} DSel={} DScale={} PME{}", csr & 3,
                         Flag(csr, 3), Flag(csr, 8), (csr >> 9) & 0xf, (csr >> 13) & 3,
                         Flag(csr, 15)));
}

void DescribeMsi(const Config& c, size_t at, Out& out, Json& cap) {
  const uint16_t ctrl = c.U16(at + 2);
  const bool is64 = (ctrl & 0x80) != 0;
  const bool maskable = (ctrl & 0x100) != 0;
  uint64_t address = c.U32(at + 4);
  if (is64) address |= static_cast<uint64_t>(c.U32(at + 8)) << 32;
  const size_t data_at = at + (is64 ? 12 : 8);
  cap["enabled"] = (ctrl & 1) != 0;
  cap["vectors_enabled"] = 1u << ((ctrl >> 4) & 7);
  cap["vectors_capable"] = 1u << ((ctrl >> 1) & 7);
  cap["maskable"] = maskable;
  cap["64bit"] = is64;
  out.Add(1, fmt::format("Capabilities: [{:02x}] MSI: Enable{} Count={}/{} Maskable{} 64bit{}",
                         at, Flag(ctrl, 0), 1u << ((ctrl >> 4) & 7), 1u << ((ctrl >> 1) & 7),
                         Flag(ctrl, 8), Flag(ctrl, 7)));
  out.Add(2, fmt::format("Address: {:016x}  Data: {:04x}", address, c.U16(data_at)));
  if (maskable) {
    out.Add(2, fmt::format("Masking: {:08x}  Pending: {:08x}", c.U32(data_at + 4),
                           c.U32(data_at + 8)));
  }
}

void DescribeMsix(const Config& c, size_t at, Out& out, Json& cap) {
  const uint16_t ctrl = c.U16(at + 2);
  const uint32_t table = c.U32(at + 4);
  const uint32_t pba = c.U32(at + 8);
  cap["enabled"] = (ctrl & 0x8000) != 0;
  cap["masked"] = (ctrl & 0x4000) != 0;
  cap["count"] = (ctrl & 0x7ff) + 1;
  cap["table"] = {{"bar", table & 7}, {"offset", table & ~7u}};
  cap["pba"] = {{"bar", pba & 7}, {"offset", pba & ~7u}};
  out.Add(1, fmt::format("Capabilities: [{:02x}] MSI-X: Enable{} Count={} Masked{}", at,
                         Flag(ctrl, 15), (ctrl & 0x7ff) + 1, Flag(ctrl, 14)));
  out.Add(2, fmt::format("Vector table: BAR={} offset={:08x}", table & 7, table & ~7u));
  out.Add(2, fmt::format("PBA: BAR={} offset={:08x}", pba & 7, pba & ~7u));
}

std::string LinkSpeed(uint32_t code) {
  static constexpr std::array<const char*, 7> kSpeeds = {"unknown", "2.5GT/s", "5GT/s",
                                                         "8GT/s", "16GT/s", "32GT/s", "64GT/s"};
  return code < kSpeeds.size() ? kSpeeds[code] : "unknown";
}

void DescribeExpress(const Config& c, size_t at, Out& out, Json& cap) {
  static constexpr std::array<const char*, 8> kL0s = {"<64ns", "<128ns", "<256ns", "<512ns",
                                                      "<1us", "<2us", "<4us", "unlimited"};
  static constexpr std::array<const char*, 8> kL1 = {"<1us", "<2us", "<4us", "<8us",
                                                     "<16us", "<32us", "<64us", "unlimited"};
  const uint16_t flags = c.U16(at + 2);
  const unsigned type = (flags >> 4) & 0xf;
  std::string type_name;
  switch (type) {
    case 0: type_name = "Endpoint"; break;
    case 1: type_name = "Legacy Endpoint"; break;
    case 4: type_name = "Root Port (Slot-)"; break;
    case 5: type_name = "Upstream Port"; break;
    case 6: type_name = "Downstream Port (Slot-)"; break;
    case 7: type_name = "PCI-Express to PCI/PCI-X Bridge"; break;
    case 8: type_name = "PCI/PCI-X to PCI-Express Bridge"; break;
    case 9: type_name = "Root Complex Integrated Endpoint"; break;
    case 10: type_name = "Root Complex Event Collector"; break;
    default: type_name = fmt::format("Unknown type {}", type);
  }
  const uint32_t devcap = c.U32(at + 4);
  const uint16_t devctl = c.U16(at + 8);
  const uint16_t devsta = c.U16(at + 10);
  const uint32_t lnkcap = c.U32(at + 12);
  const uint16_t lnksta = c.U16(at + 18);
  cap["version"] = flags & 0xf;
  cap["type"] = type_name;
  cap["max_payload"] = 128u << (devcap & 7);
  cap["link_speed"] = LinkSpeed(lnksta & 0xf);
  cap["link_width"] = (lnksta >> 4) & 0x3f;
  out.Add(1, fmt::format("Capabilities: [{:02x}] Express (v{}) {}, MSI {:02x}", at, flags & 0xf,
                         type_name, (flags >> 9) & 0x1f));
  out.Add(2, fmt::format("DevCap: MaxPayload {} bytes, PhantFunc {}, Latency L0s {}, L1 {}",
                         128u << (devcap & 7), (devcap >> 3) & 3, kL0s[(devcap >> 6) & 7],
                         kL1[(devcap >> 9) & 7]));
  out.Add(2, fmt::format("DevCtl: CorrErr{} NonFatalErr{} FatalErr{} UnsupReq{}",
                         Flag(devctl, 0), Flag(devctl, 1), Flag(devctl, 2), Flag(devctl, 3)));
  out.Add(3, fmt::format("RlxdOrd{} ExtTag{} PhantFunc{} AuxPwr{} NoSnoop{}", Flag(devctl, 4),
                         Flag(devctl, 8), Flag(devctl, 9), Flag(devctl, 10), Flag(devctl, 11)));
  out.Add(3, fmt::format("MaxPayload {} bytes, MaxReadReq {} bytes", 128u << ((devctl >> 5) & 7),
                         128u << ((devctl >> 12) & 7)));
  out.Add(2, fmt::format("DevSta: CorrErr{} NonFatalErr{} FatalErr{} UnsupReq{} AuxPwr{} "
                         "TransPend{}",
                         Flag(devsta, 0), Flag(devsta, 1), Flag(devsta, 2), Flag(devsta, 3),
                         Flag(devsta, 4), Flag(devsta, 5)));
  out.Add(2, fmt::format("LnkCap: Port #{}, Speed {}, Width x{}", lnkcap >> 24,
                         LinkSpeed(lnkcap & 0xf), (lnkcap >> 4) & 0x3f));
  out.Add(2, fmt::format("LnkSta: Speed {}, Width x{}", LinkSpeed(lnksta & 0xf),
                         (lnksta >> 4) & 0x3f));
}

void DescribeCapabilities(const Config& c, Out& out, Json& json) {
  json["capabilities"] = Json::array();
  if ((c.U16(0x06) & 0x10) == 0) return;
  size_t at = c.U8(0x34) & ~3u;
  for (int seen = 0; at >= 0x40 && c.Has(at, 2) && seen < 48; ++seen) {
    const uint8_t id = c.U8(at);
    Json cap = {{"offset", at}, {"id", id}};
    switch (id) {
      case 0x01: cap["name"] = "Power Management"; DescribePm(c, at, out, cap); break;
      case 0x05: cap["name"] = "MSI"; DescribeMsi(c, at, out, cap); break;
      case 0x10: cap["name"] = "Express"; DescribeExpress(c, at, out, cap); break;
      case 0x11: cap["name"] = "MSI-X"; DescribeMsix(c, at, out, cap); break;
      case 0x09:
        cap["name"] = "Vendor Specific";
        cap["length"] = c.U8(at + 2);
        out.Add(1, fmt::format("Capabilities: [{:02x}] Vendor Specific Information: Len={:02x} <?>",
                               at, c.U8(at + 2)));
        break;
      default:
        cap["name"] = "unknown";
        out.Add(1, fmt::format("Capabilities: [{:02x}] #{:02x}", at, id));
    }
    json["capabilities"].push_back(cap);
    at = c.U8(at + 1) & ~3u;
  }
}

void DescribeExtended(const Config& c, Out& out, Json& json) {
  json["extended_capabilities"] = Json::array();
  size_t at = 0x100;
  for (int seen = 0; at >= 0x100 && c.Has(at, 4) && seen < 64; ++seen) {
    const uint32_t header = c.U32(at);
    if (header == 0 || header == 0xffffffff) break;
    const uint16_t id = header & 0xffff;
    const char* name = "Unknown";
    switch (id) {
      case 0x01: name = "Advanced Error Reporting"; break;
      case 0x02: name = "Virtual Channel"; break;
      case 0x03: name = "Device Serial Number"; break;
      case 0x0b: name = "Vendor Specific Information"; break;
      case 0x0e: name = "Alternative Routing-ID Interpretation (ARI)"; break;
      case 0x10: name = "Single Root I/O Virtualization (SR-IOV)"; break;
      case 0x15: name = "Physical Resizable BAR"; break;
      case 0x18: name = "Latency Tolerance Reporting"; break;
      case 0x1e: name = "L1 PM Substates"; break;
      default: break;
    }
    json["extended_capabilities"].push_back(
        {{"offset", at}, {"id", id}, {"version", (header >> 16) & 0xf}, {"name", name}});
    out.Add(1, fmt::format("Capabilities: [{:03x} v{}] {}", at, (header >> 16) & 0xf, name));
    const size_t next = header >> 20;
    if (next <= at) break;
    at = next;
  }
}

}  // namespace

std::string FormatSize(uint64_t size) {
  if (size < 1024) return fmt::format("{}", size);
  if (size < (1u << 20)) return fmt::format("{}K", size >> 10);
  if (size < (1u << 30)) return fmt::format("{}M", size >> 20);
  return fmt::format("{}G", size >> 30);
}

PciDescription DescribePci(std::span<const std::byte> bytes, std::span<const PciRegion> regions) {
  const Config c(bytes);
  Out out;
  Json json;
  const uint16_t vendor = c.U16(0x00);
  const uint16_t device = c.U16(0x02);
  const uint16_t command = c.U16(0x04);
  const uint16_t status = c.U16(0x06);
  const uint8_t revision = c.U8(0x08);
  const uint32_t class_code = c.U32(0x08) >> 8;
  const uint8_t header_type = c.U8(0x0e) & 0x7f;
  json = {{"vendor_id", vendor},   {"device_id", device},       {"revision", revision},
          {"class", class_code},   {"header_type", header_type}, {"command", command},
          {"status", status},      {"config_size", c.size()}};
  out.Add(0, fmt::format("{} [{:04x}]: Device [{:04x}:{:04x}] (rev {:02x}) prog-if {:02x}",
                         ClassName(class_code >> 16), class_code >> 8, vendor, device, revision,
                         class_code & 0xff));
  if (header_type == 0) {
    const uint16_t sub_vendor = c.U16(0x2c);
    const uint16_t sub_device = c.U16(0x2e);
    json["subsystem_vendor_id"] = sub_vendor;
    json["subsystem_id"] = sub_device;
    out.Add(1, fmt::format("Subsystem: Device [{:04x}:{:04x}]", sub_vendor, sub_device));
  }
  out.Add(1, fmt::format("Control: I/O{} Mem{} BusMaster{} SpecCycle{} MemWINV{} VGASnoop{} "
                         "ParErr{} Stepping{} SERR{} FastB2B{} DisINTx{}",
                         Flag(command, 0), Flag(command, 1), Flag(command, 2), Flag(command, 3),
                         Flag(command, 4), Flag(command, 5), Flag(command, 6), Flag(command, 7),
                         Flag(command, 8), Flag(command, 9), Flag(command, 10)));
  static constexpr std::array<const char*, 4> kDevsel = {"fast", "medium", "slow", "??"};
  out.Add(1, fmt::format("Status: Cap{} 66MHz{} UDF{} FastB2B{} ParErr{} DEVSEL={} >TAbort{} "
                         "<TAbort{} <MAbort{} >SERR{} <PERR{} INTx{}",
                         Flag(status, 4), Flag(status, 5), Flag(status, 6), Flag(status, 7),
                         Flag(status, 8), kDevsel[(status >> 9) & 3], Flag(status, 11),
                         Flag(status, 12), Flag(status, 13), Flag(status, 14), Flag(status, 15),
                         Flag(status, 3)));
  const uint8_t pin = c.U8(0x3d);
  json["interrupt_pin"] = pin;
  if (pin >= 1 && pin <= 4) {
    out.Add(1, fmt::format("Interrupt: pin {}", static_cast<char>('A' + pin - 1)));
  }
  DescribeBars(c, regions, header_type == 0 ? 6 : 2, out, json);
  const size_t rom_at = header_type == 1 ? 0x38 : 0x30;
  const uint32_t rom = c.U32(rom_at);
  const PciRegion* rom_region = FindRegion(regions, 6);
  const uint64_t rom_size = rom_region != nullptr ? rom_region->size : 0;
  if (rom != 0 || rom_size != 0) {
    const uint32_t address = rom & ~0x7ffu;
    json["rom"] = {{"address", address}, {"enabled", (rom & 1) != 0}, {"size", rom_size}};
    out.Add(1, fmt::format("Expansion ROM at {}{}{}",
                           address != 0 ? fmt::format("{:08x}", address) : "<unassigned>",
                           (rom & 1) != 0 ? "" : " [disabled]",
                           rom_size != 0 ? " [size=" + FormatSize(rom_size) + "]" : ""));
  }
  DescribeCapabilities(c, out, json);
  DescribeExtended(c, out, json);
  return PciDescription{std::move(out.lines), std::move(json)};
}

}  // namespace umdev::probe
