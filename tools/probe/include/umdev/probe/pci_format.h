// Decoding a PCI config space the way `lspci -vv` prints it, for
// umdev-probe's `info`: ids, COMMAND/STATUS, BARs sized from the region
// info, the interrupt pin and the capability lists.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace umdev::probe {

// What the device reports for a VFIO PCI region (BAR0-5 = 0-5, ROM = 6).
struct PciRegion {
  uint32_t index = 0;
  uint32_t flags = 0;  // VFIO_REGION_INFO_FLAG_*.
  uint64_t size = 0;
};

struct PciDescription {
  std::vector<std::string> lines;  // lspci -vv style; nested lines start with tabs.
  nlohmann::json json;
};

// |config| is the config space as read (at least 64 bytes for a header).
PciDescription DescribePci(std::span<const std::byte> config, std::span<const PciRegion> regions);

// "4K", "256M", as lspci prints sizes ("8" under 1 KiB).
std::string FormatSize(uint64_t size);

}  // namespace umdev::probe
