// Error description and errno names.
#include "umdev/common/error.h"

#include <cstring>
#include <fmt/format.h>

namespace umdev {

std::string Error::Describe() const {
  return fmt::format("{}: {} ({})", context, std::strerror(code), ErrnoName(code));
}

Error Wrap(Error error, std::string_view outer) {
  error.context = fmt::format("{}: {}", outer, error.context);
  return error;
}

std::string_view ErrnoName(int code) {
  // strerrorname_np() exists from glibc 2.32; Debian 12 ships 2.36.
  const char* name = strerrordesc_np(code) != nullptr ? strerrorname_np(code) : nullptr;
  return name != nullptr ? std::string_view(name) : std::string_view("E?");
}

}  // namespace umdev
