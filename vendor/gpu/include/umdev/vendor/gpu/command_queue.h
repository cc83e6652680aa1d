// CommandQueue: the seam between a device's guest command ring and whatever
// runs its commands (DirectRunner now, a share-enforcing scheduler later).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace umdev::vendor::gpu {

struct CommandCost { std::chrono::nanoseconds busy{0}; uint64_t bytes = 0; bool failed = false; };

// Implemented by a device: a queue of guest commands. RunOne() is called by
// one scheduler thread at a time, never with a scheduler lock held.
class CommandQueue {
 public:
  virtual ~CommandQueue() = default;
  // Runs the next pending command; nullopt when there is none (idle).
  virtual std::optional<CommandCost> RunOne() = 0;
};

}  // namespace umdev::vendor::gpu
