// The hostile-client suite's cases: named frame sequences, each frame with
// the outcome the spec or the kernel prescribes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "umdev/vfio_user/protocol.h"

namespace umdev::vfio_user::testing {

// A descriptor the harness makes fresh for a frame.
enum class FdKind : uint8_t {
  kNone,
  kEventFd,          // Blocking eventfd.
  kMemfd,            // Unsealed memfd of 64 KiB.
  kShortMemfd,       // Unsealed memfd of 4 KiB.
  kSealableMemfd,    // MFD_ALLOW_SEALING, not sealed, 64 KiB.
  kSealedMemfd,      // Sealed against shrink and grow, 64 KiB.
  kPipe,
  kSocket,
  kDevNull,
  kEpoll,
};

// What a frame must get back.
enum class Outcome : uint8_t {
  kReply,       // A reply to this frame with |error| (0: success).
  kNoReply,     // Nothing (NO_REPLY, or a reply-typed frame the server drops).
  kDisconnect,  // The server closes the connection.
  kHangUp,      // The client closes right after sending (mid-message, say).
  kAnything,    // A reply of any errno, or a disconnect (random frames).
};

struct Frame {
  std::vector<std::byte> bytes;  // Header included, exactly as sent.
  FdKind fd = FdKind::kNone;
  int fd_count = 0;
  Outcome outcome = Outcome::kReply;
  int error = 0;
};

struct HostileCase {
  std::string name;     // A valid GoogleTest name: letters, digits, '_'.
  std::string device;   // "mtty" or "gpu": which device the client attaches to.
  bool negotiate = true;
  std::vector<Frame> frames;
};

// Every case of the suite, for both devices where the command is the device's.
std::vector<HostileCase> AllHostileCases();

}  // namespace umdev::vfio_user::testing
