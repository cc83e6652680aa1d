// Word parsing shared by umdev-probe's commands.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "umdev/common/error.h"

namespace umdev::probe {

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;  // "--count" -> "16".
  std::set<std::string> flags;                 // "--no-fd".
  bool Has(const std::string& flag) const { return flags.contains(flag); }
};

// Splits words[1..] into positionals, valued options and flags; |usage| is
// the command's synopsis for errors. Errors: kUsageError.
Result<Args> ParseArgs(const std::vector<std::string>& words, const std::set<std::string>& valued,
                       const std::set<std::string>& flags, size_t min_positional,
                       size_t max_positional, const char* usage);

// 0x-prefixed hex, 0-prefixed octal or decimal, with an optional K/M/G
// suffix when |sizes|. Errors: EINVAL naming |what|.
Result<uint64_t> ParseNumber(const std::string& text, const char* what, bool sizes = false);
// bar0..bar5, rom, config, vga, or a number.
Result<uint32_t> ParseRegion(const std::string& text);
// "deadbeef" or "de:ad:be:ef". Errors: EINVAL.
Result<std::vector<std::byte>> ParseHex(const std::string& text);

std::string RegionName(uint32_t index);
std::string IrqName(uint32_t index);
// 16 bytes a line, each line starting at its address.
std::string HexDump(uint64_t address, std::span<const std::byte> bytes);
std::string HexString(std::span<const std::byte> bytes);

}  // namespace umdev::probe
