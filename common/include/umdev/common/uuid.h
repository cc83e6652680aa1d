// Uuid: the 128-bit identity of an mdev, printed in lowercase canonical form.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "umdev/common/error.h"

namespace umdev {

// A value type. Thread-compatible.
class Uuid {
 public:
  Uuid() = default;

  // Parses the 36-character 8-4-4-4-12 form, hex digits in either case, as the
  // kernel's guid_parse() does. Errors: EINVAL for any other text.
  static Result<Uuid> Parse(std::string_view text);
  // A random (version 4, variant 1) UUID from the kernel's entropy pool.
  static Uuid Generate();

  // Lowercase canonical form, as the kernel names an mdev ("%pUl").
  std::string ToString() const;
  bool is_nil() const;

  auto operator<=>(const Uuid&) const = default;

 private:
  std::array<uint8_t, 16> bytes_{};
};

}  // namespace umdev
