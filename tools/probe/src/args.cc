// Word parsing and formatting helpers for umdev-probe.
#include "args.h"

#include <fmt/format.h>

#include <array>
#include <cerrno>
#include <cstdlib>

#include "umdev/probe/session.h"

namespace umdev::probe {

Result<Args> ParseArgs(const std::vector<std::string>& words, const std::set<std::string>& valued,
                       const std::set<std::string>& flags, size_t min_positional,
                       size_t max_positional, const char* usage) {
  Args args;
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string& word = words[i];
    if (word.size() > 2 && word.starts_with("--")) {
      if (valued.contains(word)) {
        if (i + 1 == words.size()) break;  // Reported as usage below.
        args.options[word] = words[++i];
        continue;
      }
      if (flags.contains(word)) {
        args.flags.insert(word);
        continue;
      }
      return Fail(kUsageError, fmt::format("unknown option {}; usage: {}", word, usage));
    }
    args.positional.push_back(word);
  }
  if (args.positional.size() < min_positional || args.positional.size() > max_positional ||
      (words.size() > 1 && valued.contains(words.back()))) {
    return Fail(kUsageError, std::string("usage: ") + usage);
  }
  return args;
}

Result<uint64_t> ParseNumber(const std::string& text, const char* what, bool sizes) {
  if (text.empty() || text[0] == '-') {
    return Fail(EINVAL, fmt::format("bad {} '{}'", what, text));
  }
  errno = 0;
  char* end = nullptr;
  uint64_t value = std::strtoull(text.c_str(), &end, 0);
  if (errno != 0 || end == text.c_str()) return Fail(EINVAL, fmt::format("bad {} '{}'", what, text));
  if (sizes && *end != '\0' && end[1] == '\0') {
    const int shift = *end == 'K' || *end == 'k' ? 10 : *end == 'M' || *end == 'm' ? 20
                    : *end == 'G' || *end == 'g' ? 30 : -1;
    if (shift >= 0 && value <= (~0ull >> shift)) {
      value <<= shift;
      ++end;
    }
  }
  if (*end != '\0') return Fail(EINVAL, fmt::format("bad {} '{}'", what, text));
  return value;
}

Result<uint32_t> ParseRegion(const std::string& text) {
  if (text.size() == 4 && text.starts_with("bar") && text[3] >= '0' && text[3] <= '5') {
    return static_cast<uint32_t>(text[3] - '0');
  }
  if (text == "rom") return 6u;
  if (text == "config") return 7u;
  if (text == "vga") return 8u;
  UMDEV_ASSIGN_OR_RETURN(uint64_t index, ParseNumber(text, "REGION"));
  if (index > 0xffffffffu) return Fail(EINVAL, fmt::format("bad REGION '{}'", text));
  return static_cast<uint32_t>(index);
}

Result<std::vector<std::byte>> ParseHex(const std::string& text) {
  std::string digits;
  for (char ch : text) {
    if (ch != ':' && ch != ' ') digits.push_back(ch);
  }
  if (digits.starts_with("0x")) digits.erase(0, 2);
  if (digits.empty() || digits.size() % 2 != 0) {
    return Fail(EINVAL, fmt::format("bad HEXBYTES '{}'", text));
  }
  std::vector<std::byte> out;
  for (size_t i = 0; i < digits.size(); i += 2) {
    const std::string pair = digits.substr(i, 2);
    char* end = nullptr;
    const unsigned long value = std::strtoul(pair.c_str(), &end, 16);
    if (*end != '\0') return Fail(EINVAL, fmt::format("bad HEXBYTES '{}'", text));
    out.push_back(static_cast<std::byte>(value));
  }
  return out;
}

std::string RegionName(uint32_t index) {
  static constexpr std::array<const char*, 9> kNames = {"BAR0", "BAR1", "BAR2", "BAR3", "BAR4",
                                                        "BAR5", "ROM",  "config", "VGA"};
  return index < kNames.size() ? kNames[index] : "device-specific";
}

std::string IrqName(uint32_t index) {
  static constexpr std::array<const char*, 5> kNames = {"INTx", "MSI", "MSI-X", "ERR", "REQ"};
  return index < kNames.size() ? kNames[index] : "device-specific";
}

std::string HexDump(uint64_t address, std::span<const std::byte> bytes) {
  std::string out;
  for (size_t line = 0; line < bytes.size(); line += 16) {
    out += fmt::format("{:08x}:", address + line);
    for (size_t i = line; i < bytes.size() && i < line + 16; ++i) {
      out += fmt::format(" {:02x}", static_cast<unsigned>(bytes[i]));
    }
    out += '\n';
  }
  return out;
}

std::string HexString(std::span<const std::byte> bytes) {
  std::string out;
  for (std::byte b : bytes) out += fmt::format("{:02x}", static_cast<unsigned>(b));
  return out;
}

}  // namespace umdev::probe
