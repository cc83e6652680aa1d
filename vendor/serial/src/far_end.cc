// FarEndSpec: parsing and printing the "far_end" attribute.
#include "umdev/vendor/serial/far_end.h"

#include <fmt/format.h>

namespace umdev::vendor::serial {

Result<FarEndSpec> FarEndSpec::Parse(std::string_view text) {
  if (text.ends_with('\n')) text.remove_suffix(1);
  if (text == "loopback") return FarEndSpec{};
  if (text == "pty") return FarEndSpec{.kind = FarEndKind::kPty, .socket_path = {}};
  constexpr std::string_view kSocket = "socket:";
  if (text.starts_with(kSocket)) {
    const std::string_view path = text.substr(kSocket.size());
    if (path.empty() || path.front() != '/' || path.find('\0') != std::string_view::npos) {
      return Fail(EINVAL, "far_end: socket needs an absolute path");
    }
    return FarEndSpec{.kind = FarEndKind::kSocket, .socket_path = std::string(path)};
  }
  return Fail(EINVAL, fmt::format("far_end: '{}' is not loopback, pty or socket:PATH", text));
}

std::string FarEndSpec::ToString() const {
  switch (kind) {
    case FarEndKind::kPty:
      return "pty";
    case FarEndKind::kSocket:
      return "socket:" + socket_path;
    default:
      return "loopback";
  }
}

std::string FarEndSpec::SocketPathFor(unsigned port) const {
  return port == 0 ? socket_path : fmt::format("{}.{}", socket_path, port);
}

}  // namespace umdev::vendor::serial
