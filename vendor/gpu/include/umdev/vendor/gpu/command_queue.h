// CommandQueue: the seam between a device's guest command ring and whatever
// runs its commands (DirectRunner now, a share-enforcing scheduler later).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace umdev::vendor::gpu {

// What one RunOne() did. |partial|: a piece of a long command that goes on
// at the next RunOne() (COPY and FILL run in pieces, so a runner can preempt
// between them): busy time and bytes count, the command does not yet.
struct CommandCost {
  std::chrono::nanoseconds busy{0};
  uint64_t bytes = 0;
  bool failed = false;
  bool partial = false;
};

// Implemented by a device: a queue of guest commands. RunOne() is called by
// one scheduler thread at a time, never with a scheduler lock held.
class CommandQueue {
 public:
  virtual ~CommandQueue() = default;
  // Runs the next pending command, or the next piece of one; nullopt when
  // there is none (idle).
  virtual std::optional<CommandCost> RunOne() = 0;
};

}  // namespace umdev::vendor::gpu
