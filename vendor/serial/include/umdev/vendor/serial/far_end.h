// FarEndSpec: what is at the other end of an mtty port's line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "umdev/common/error.h"

namespace umdev::vendor::serial {

// Stored in migration streams: values are fixed.
enum class FarEndKind : uint8_t {
  kLoopback = 0,  // What the guest transmits comes back to its receiver.
  kPty = 1,       // A host pseudo-terminal; its slave path is the "pty" attribute.
  kSocket = 2,    // A UNIX stream socket the daemon listens on; one client at a time.
};

// The value of the "far_end" attribute: "loopback", "pty" or "socket:PATH".
// With several ports, port 0 listens at PATH and port N > 0 at "PATH.N".
struct FarEndSpec {
  FarEndKind kind = FarEndKind::kLoopback;
  std::string socket_path;  // kSocket only; absolute.

  // Accepts one trailing newline (what `echo` writes). Errors: EINVAL an
  // unknown kind, or a socket path that is empty or not absolute.
  static Result<FarEndSpec> Parse(std::string_view text);
  std::string ToString() const;
  // Where port |port| listens for kSocket.
  std::string SocketPathFor(unsigned port) const;

  bool operator==(const FarEndSpec&) const = default;
};

}  // namespace umdev::vendor::serial
