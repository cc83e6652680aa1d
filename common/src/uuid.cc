// Uuid parsing, formatting and generation.
#include "umdev/common/uuid.h"

#include <sys/random.h>

#include <algorithm>
#include <fmt/format.h>

namespace umdev {
namespace {

constexpr size_t kTextLength = 36;
constexpr bool IsDashPosition(size_t i) { return i == 8 || i == 13 || i == 18 || i == 23; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Result<Uuid> Uuid::Parse(std::string_view text) {
  if (text.size() != kTextLength) {
    return Fail(EINVAL, fmt::format("'{}' is not a UUID: expected 36 characters", text));
  }
  Uuid uuid;
  size_t nibble = 0;
  for (size_t i = 0; i < kTextLength; ++i) {
    if (IsDashPosition(i)) {
      if (text[i] != '-') return Fail(EINVAL, fmt::format("'{}' is not a UUID", text));
      continue;
    }
    const int value = HexValue(text[i]);
    if (value < 0) return Fail(EINVAL, fmt::format("'{}' is not a UUID", text));
    uuid.bytes_[nibble / 2] = static_cast<uint8_t>(uuid.bytes_[nibble / 2] | (nibble % 2 == 0 ? value << 4 : value));
    ++nibble;
  }
  return uuid;
}

Uuid Uuid::Generate() {
  Uuid uuid;
  // getrandom() on a 16-byte request never returns short once the pool is
  // initialised; retry on EINTR.
  while (::getrandom(uuid.bytes_.data(), uuid.bytes_.size(), 0) != static_cast<ssize_t>(uuid.bytes_.size())) {
  }
  uuid.bytes_[6] = static_cast<uint8_t>((uuid.bytes_[6] & 0x0f) | 0x40);  // Version 4.
  uuid.bytes_[8] = static_cast<uint8_t>((uuid.bytes_[8] & 0x3f) | 0x80);  // RFC 4122 variant.
  return uuid;
}

std::string Uuid::ToString() const {
  const auto& b = bytes_;
  return fmt::format(
      "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-"
      "{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
      b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
      b[14], b[15]);
}

bool Uuid::is_nil() const {
  return std::all_of(bytes_.begin(), bytes_.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace umdev
