// ProbeSession: the command loop, and the commands that query the device.
#include "umdev/probe/session.h"

#include <fmt/format.h>

#include <cstring>

#include "args.h"
#include "umdev/probe/pci_format.h"

namespace umdev::probe {
namespace {

using Json = nlohmann::json;

// A device failure in a command's words: "region 9: ..." with the errno.
std::string RegionFlags(uint32_t flags) {
  std::string out;
  const std::pair<uint32_t, const char*> kBits[] = {{VFIO_REGION_INFO_FLAG_READ, "READ"},
                                                    {VFIO_REGION_INFO_FLAG_WRITE, "WRITE"},
                                                    {VFIO_REGION_INFO_FLAG_MMAP, "MMAP"},
                                                    {VFIO_REGION_INFO_FLAG_CAPS, "CAPS"}};
  for (const auto& [bit, name] : kBits) {
    if ((flags & bit) != 0) out += out.empty() ? name : std::string(" ") + name;
  }
  return out.empty() ? "none" : out;
}

std::string IrqFlags(uint32_t flags) {
  std::string out;
  const std::pair<uint32_t, const char*> kBits[] = {{VFIO_IRQ_INFO_EVENTFD, "EVENTFD"},
                                                    {VFIO_IRQ_INFO_MASKABLE, "MASKABLE"},
                                                    {VFIO_IRQ_INFO_AUTOMASKED, "AUTOMASKED"},
                                                    {VFIO_IRQ_INFO_NORESIZE, "NORESIZE"}};
  for (const auto& [bit, name] : kBits) {
    if ((flags & bit) != 0) out += out.empty() ? name : std::string(" ") + name;
  }
  return out.empty() ? "none" : out;
}

}  // namespace

std::vector<std::string> ProbeSession::SplitLine(const std::string& line) {
  std::vector<std::string> words;
  std::string word;
  for (char ch : line) {
    if (ch == '#' && word.empty()) break;
    if (ch == ' ' || ch == '\t' || ch == '\r') {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else {
      word.push_back(ch);
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

std::string ProbeSession::FormatError(const std::string& command, const Error& error) {
  if (error.code == kUsageError) return command + ": " + error.context;
  return command + ": " + error.Describe();
}

int ProbeSession::Run(const std::vector<std::string>& words) {
  if (words.empty()) return 0;
  auto output = Dispatch(words);
  if (!output.has_value()) {
    const Error& error = output.error();
    std::fprintf(err_, "%s\n", FormatError(words[0], error).c_str());
    if (json_) {
      Json failure = {{"command", words[0]}, {"error", {{"message", error.context}}}};
      if (error.code != kUsageError) {
        failure["error"]["errno"] = error.code;
        failure["error"]["name"] = std::string(ErrnoName(error.code));
      }
      std::fprintf(out_, "%s\n", failure.dump().c_str());
    }
    std::fflush(out_);
    return error.code == kUsageError ? 2 : 1;
  }
  if (json_) {
    Json object = {{"command", words[0]}};
    object.update(output->json);
    std::fprintf(out_, "%s\n", object.dump().c_str());
  } else {
    std::fputs(output->text.c_str(), out_);
  }
  std::fflush(out_);
  return 0;
}

int ProbeSession::RunScript(std::istream& in, bool keep_going) {
  int status = 0;
  for (std::string line; std::getline(in, line);) {
    const int result = Run(SplitLine(line));
    if (result != 0) {
      if (status == 0) status = result;
      if (!keep_going) break;
    }
  }
  return status;
}

Result<Output> ProbeSession::Dispatch(const std::vector<std::string>& words) {
  const std::string& name = words[0];
  auto no_args = [&](const char* usage) -> Result<void> {
    UMDEV_TRY(ParseArgs(words, {}, {}, 0, 0, usage));
    return {};
  };
  if (name == "info") {
    UMDEV_TRY(no_args("info"));
    return Info();
  }
  if (name == "regions") {
    UMDEV_TRY(no_args("regions"));
    return Regions();
  }
  if (name == "irqs") {
    UMDEV_TRY(no_args("irqs"));
    return Irqs();
  }
  if (name == "reset") {
    UMDEV_TRY(no_args("reset"));
    return Reset();
  }
  if (name == "read") return Read(words);
  if (name == "write") return Write(words);
  if (name == "map-memory") return MapMemory(words);
  if (name == "mem-read") return MemRead(words);
  if (name == "mem-write") return MemWrite(words);
  if (name == "arm-irq") return ArmIrq(words);
  if (name == "wait-irq") return WaitIrq(words);
  if (name == "unmask-irq") return UnmaskIrq(words);
  if (name == "dirty-log") return DirtyLog(words);
  if (name == "save") return Save(words);
  if (name == "resume") return Resume(words);
  return Fail(kUsageError,
              "unknown command; commands: info regions irqs read write map-memory mem-read "
              "mem-write arm-irq wait-irq unmask-irq dirty-log reset save resume");
}

Result<Output> ProbeSession::Info() {
  auto device = client_.GetDeviceInfo();
  if (!device.has_value()) return FailAs(device.error(), "device info");
  Output output;
  std::string flags;
  if ((device->flags & VFIO_DEVICE_FLAGS_PCI) != 0) flags += " PCI";
  if ((device->flags & VFIO_DEVICE_FLAGS_RESET) != 0) flags += " RESET";
  output.text = fmt::format("Device: flags {:#x} ({}), {} regions, {} irqs\n", device->flags,
                            flags.empty() ? "none" : flags.substr(1), device->num_regions,
                            device->num_irqs);
  output.json["device"] = {{"flags", device->flags},
                           {"num_regions", device->num_regions},
                           {"num_irqs", device->num_irqs}};
  if ((device->flags & VFIO_DEVICE_FLAGS_PCI) == 0) return output;
  std::vector<PciRegion> regions;
  for (uint32_t i = 0; i < device->num_regions && i <= VFIO_PCI_CONFIG_REGION_INDEX; ++i) {
    auto info = client_.GetRegionInfo(i);
    if (info.has_value()) regions.push_back(PciRegion{i, info->flags, info->size});
  }
  uint64_t config_size = 0;
  for (const PciRegion& region : regions) {
    if (region.index == VFIO_PCI_CONFIG_REGION_INDEX) config_size = region.size;
  }
  std::vector<std::byte> config(std::min<uint64_t>(config_size, 4096));
  if (config.empty()) return Fail(ENODEV, "config region: size 0");
  auto read = client_.RegionRead(VFIO_PCI_CONFIG_REGION_INDEX, 0, config);
  if (!read.has_value()) return FailAs(read.error(), "config region");
  config.resize(*read);
  PciDescription pci = DescribePci(config, regions);
  for (const std::string& line : pci.lines) output.text += line + "\n";
  output.json["pci"] = std::move(pci.json);
  return output;
}

Result<Output> ProbeSession::Regions() {
  auto device = client_.GetDeviceInfo();
  if (!device.has_value()) return FailAs(device.error(), "device info");
  Output output;
  output.json["regions"] = Json::array();
  for (uint32_t i = 0; i < device->num_regions; ++i) {
    auto info = client_.GetRegionInfo(i);
    if (!info.has_value()) {
      output.text += fmt::format("Region {} ({}): {}\n", i, RegionName(i), info.error().Describe());
      output.json["regions"].push_back(
          {{"index", i}, {"errno", info.error().code}, {"error", std::string(ErrnoName(info.error().code))}});
      continue;
    }
    Json entry = {{"index", i},          {"name", RegionName(i)},  {"size", info->size},
                  {"offset", info->offset}, {"flags", info->flags}, {"fd", info->fd.valid()}};
    std::string line = fmt::format("Region {} ({}): size {:#x}, offset {:#x}, flags {}", i,
                                   RegionName(i), info->size, info->offset,
                                   RegionFlags(info->flags));
    if (info->sparse_areas.has_value()) {
      entry["sparse_areas"] = Json::array();
      line += ", sparse";
      for (const auto& area : *info->sparse_areas) {
        line += fmt::format(" {:#x}+{:#x}", area.offset, area.size);
        entry["sparse_areas"].push_back({{"offset", area.offset}, {"size", area.size}});
      }
    }
    if (info->type.has_value()) {
      line += fmt::format(", type {}/{}", info->type->type, info->type->subtype);
      entry["type"] = {{"type", info->type->type}, {"subtype", info->type->subtype}};
    }
    if (info->msix_mappable) line += ", msix-mappable";
    entry["msix_mappable"] = info->msix_mappable;
    if (info->fd.valid()) line += ", fd";
    output.text += line + "\n";
    output.json["regions"].push_back(entry);
  }
  return output;
}

Result<Output> ProbeSession::Irqs() {
  auto device = client_.GetDeviceInfo();
  if (!device.has_value()) return FailAs(device.error(), "device info");
  Output output;
  output.json["irqs"] = Json::array();
  for (uint32_t i = 0; i < device->num_irqs; ++i) {
    auto info = client_.GetIrqInfo(i);
    if (!info.has_value()) {
      output.text += fmt::format("IRQ {} ({}): {}\n", i, IrqName(i), info.error().Describe());
      output.json["irqs"].push_back({{"index", i}, {"errno", info.error().code}});
      continue;
    }
    output.text += fmt::format("IRQ {} ({}): count {}, flags {}\n", i, IrqName(i), info->count,
                               IrqFlags(info->flags));
    output.json["irqs"].push_back(
        {{"index", i}, {"name", IrqName(i)}, {"count", info->count}, {"flags", info->flags}});
  }
  return output;
}

Result<Output> ProbeSession::Read(const std::vector<std::string>& words) {
  constexpr const char* kUsage = "read REGION OFFSET [WIDTH|--count N] [--mmap]";
  UMDEV_ASSIGN_OR_RETURN(Args args, ParseArgs(words, {"--count"}, {"--mmap"}, 2, 3, kUsage));
  UMDEV_ASSIGN_OR_RETURN(uint32_t region, ParseRegion(args.positional[0]));
  UMDEV_ASSIGN_OR_RETURN(uint64_t offset, ParseNumber(args.positional[1], "OFFSET"));
  const bool dump = args.options.contains("--count");
  if (dump && args.positional.size() == 3) return Fail(kUsageError, std::string("usage: ") + kUsage);
  uint64_t count = 4;
  if (dump) {
    UMDEV_ASSIGN_OR_RETURN(count, ParseNumber(args.options["--count"], "count", true));
    if (count == 0 || count > (64u << 20)) return Fail(EINVAL, fmt::format("bad count {}", count));
  } else if (args.positional.size() == 3) {
    UMDEV_ASSIGN_OR_RETURN(count, ParseNumber(args.positional[2], "WIDTH"));
    if (count != 1 && count != 2 && count != 4 && count != 8) {
      return Fail(EINVAL, fmt::format("bad WIDTH {} (1, 2, 4 or 8)", count));
    }
  }
  std::vector<std::byte> data(count);
  if (args.Has("--mmap")) {
    // One access of the width, as a driver's load from a mapped BAR.
    if (dump) return Fail(kUsageError, std::string("usage: ") + kUsage);
    UMDEV_ASSIGN_OR_RETURN(volatile std::byte* at, Mapped(region, offset, count));
    uint64_t loaded = 0;
    switch (count) {
      case 1: loaded = *reinterpret_cast<volatile uint8_t*>(at); break;
      case 2: loaded = *reinterpret_cast<volatile uint16_t*>(at); break;
      case 4: loaded = *reinterpret_cast<volatile uint32_t*>(at); break;
      default: loaded = *reinterpret_cast<volatile uint64_t*>(at); break;
    }
    std::memcpy(data.data(), &loaded, count);
  } else {
    auto read = client_.RegionRead(region, offset, data);
    if (!read.has_value()) return FailAs(read.error(), fmt::format("region {}", region));
    data.resize(*read);
  }
  Output output;
  output.json = {{"region", region}, {"offset", offset}, {"count", data.size()}};
  if (dump) {
    output.text = HexDump(offset, data);
    output.json["data"] = HexString(data);
    return output;
  }
  if (data.size() != count) {
    return Fail(EIO, fmt::format("region {}: short read of {} bytes", region, data.size()));
  }
  uint64_t value = 0;
  std::memcpy(&value, data.data(), count);
  output.text = fmt::format("{:#0{}x}\n", value, 2 + 2 * count);
  output.json["width"] = count;
  output.json["value"] = value;
  return output;
}

Result<Output> ProbeSession::Write(const std::vector<std::string>& words) {
  constexpr const char* kUsage = "write REGION OFFSET VALUE [WIDTH] [--posted|--mmap]";
  UMDEV_ASSIGN_OR_RETURN(Args args, ParseArgs(words, {}, {"--posted", "--mmap"}, 3, 4, kUsage));
  UMDEV_ASSIGN_OR_RETURN(uint32_t region, ParseRegion(args.positional[0]));
  UMDEV_ASSIGN_OR_RETURN(uint64_t offset, ParseNumber(args.positional[1], "OFFSET"));
  UMDEV_ASSIGN_OR_RETURN(uint64_t value, ParseNumber(args.positional[2], "VALUE"));
  uint64_t width = 4;
  if (args.positional.size() == 4) {
    UMDEV_ASSIGN_OR_RETURN(width, ParseNumber(args.positional[3], "WIDTH"));
    if (width != 1 && width != 2 && width != 4 && width != 8) {
      return Fail(EINVAL, fmt::format("bad WIDTH {} (1, 2, 4 or 8)", width));
    }
  }
  if (width < 8 && value >> (8 * width) != 0) {
    return Fail(EINVAL, fmt::format("VALUE {:#x} does not fit in {} bytes", value, width));
  }
  if (args.Has("--mmap")) {
    UMDEV_ASSIGN_OR_RETURN(volatile std::byte* at, Mapped(region, offset, width));
    switch (width) {
      case 1: *reinterpret_cast<volatile uint8_t*>(at) = static_cast<uint8_t>(value); break;
      case 2: *reinterpret_cast<volatile uint16_t*>(at) = static_cast<uint16_t>(value); break;
      case 4: *reinterpret_cast<volatile uint32_t*>(at) = static_cast<uint32_t>(value); break;
      default: *reinterpret_cast<volatile uint64_t*>(at) = value; break;
    }
    Output output;
    output.json = {{"region", region}, {"offset", offset}, {"width", width}, {"value", value},
                   {"mmap", true}};
    return output;
  }
  std::byte data[8];
  std::memcpy(data, &value, sizeof(data));
  const auto mode = args.Has("--posted") ? vfio_user::WriteMode::kPosted
                                         : vfio_user::WriteMode::kWait;
  auto written = client_.RegionWrite(region, offset, std::span(data, width), mode);
  if (!written.has_value()) return FailAs(written.error(), fmt::format("region {}", region));
  Output output;
  output.json = {{"region", region}, {"offset", offset}, {"width", width}, {"value", value}};
  return output;
}

Result<Output> ProbeSession::Reset() {
  auto reset = client_.Reset();
  if (!reset.has_value()) return FailAs(reset.error(), "device reset");
  return Output{};
}

}  // namespace umdev::probe
