// The migration v2 FSM: arcs per feature flags and the path between states.
#include "umdev/mdev_core/migration.h"

#include <array>
#include <fmt/format.h>

namespace umdev {
namespace {

constexpr vfio_device_mig_state kError = VFIO_DEVICE_STATE_ERROR;
constexpr vfio_device_mig_state kStop = VFIO_DEVICE_STATE_STOP;
constexpr vfio_device_mig_state kRunning = VFIO_DEVICE_STATE_RUNNING;
constexpr vfio_device_mig_state kStopCopy = VFIO_DEVICE_STATE_STOP_COPY;
constexpr vfio_device_mig_state kResuming = VFIO_DEVICE_STATE_RESUMING;
constexpr vfio_device_mig_state kRunningP2P = VFIO_DEVICE_STATE_RUNNING_P2P;
constexpr vfio_device_mig_state kPreCopy = kVfioStatePreCopy;
constexpr vfio_device_mig_state kPreCopyP2P = kVfioStatePreCopyP2P;

constexpr uint32_t Index(vfio_device_mig_state state) { return static_cast<uint32_t>(state); }

constexpr bool InRange(vfio_device_mig_state state) { return Index(state) < kVfioStateCount; }

constexpr vfio_device_mig_state StateAt(uint32_t index) { return static_cast<vfio_device_mig_state>(index); }

}  // namespace

std::string_view MigrationStateName(vfio_device_mig_state state) {
  static constexpr std::array<std::string_view, kVfioStateCount> kNames = {
      "ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P", "PRE_COPY", "PRE_COPY_P2P"};
  return InRange(state) ? kNames[Index(state)] : "INVALID";
}

bool IsSavingState(vfio_device_mig_state state) {
  return state == kStopCopy || state == kPreCopy || state == kPreCopyP2P;
}

bool MigrationStateSupported(uint64_t flags, vfio_device_mig_state state) {
  if ((flags & VFIO_MIGRATION_STOP_COPY) == 0) return false;
  const bool p2p = (flags & VFIO_MIGRATION_P2P) != 0;
  const bool pre_copy = (flags & kVfioMigrationPreCopy) != 0;
  switch (Index(state)) {
    case VFIO_DEVICE_STATE_STOP:
    case VFIO_DEVICE_STATE_RUNNING:
    case VFIO_DEVICE_STATE_STOP_COPY:
    case VFIO_DEVICE_STATE_RESUMING:
      return true;
    case VFIO_DEVICE_STATE_RUNNING_P2P:
      return p2p;
    case Index(kPreCopy):
      return pre_copy;
    case Index(kPreCopyP2P):
      return pre_copy && p2p;
    default:  // ERROR and values outside the enum.
      return false;
  }
}

bool IsMigrationArc(uint64_t flags, vfio_device_mig_state from, vfio_device_mig_state to) {
  if (!MigrationStateSupported(flags, from) || !MigrationStateSupported(flags, to)) return false;
  const bool p2p = (flags & VFIO_MIGRATION_P2P) != 0;
  auto either = [&](vfio_device_mig_state a, vfio_device_mig_state b) {
    return (from == a && to == b) || (from == b && to == a);
  };
  // The data sessions: STOP opens the stop-copy and resume sessions and is
  // where they end.
  if (either(kStop, kResuming) || either(kStop, kStopCopy)) return true;
  // Quiescing: with P2P, RUNNING and STOP meet through RUNNING_P2P, and the
  // pre-copy states do likewise through PRE_COPY_P2P.
  if (p2p) {
    if (either(kRunning, kRunningP2P) || either(kRunningP2P, kStop)) return true;
    if (either(kRunning, kPreCopy) || either(kPreCopy, kPreCopyP2P) ||
        either(kRunningP2P, kPreCopyP2P)) {
      return true;
    }
    return from == kPreCopyP2P && to == kStopCopy;
  }
  if (either(kRunning, kStop) || either(kRunning, kPreCopy)) return true;
  return from == kPreCopy && to == kStopCopy;
}

Result<vfio_device_mig_state> NextMigrationState(uint64_t flags, vfio_device_mig_state current,
                                                 vfio_device_mig_state target) {
  if (!MigrationStateSupported(flags, current)) {
    return Fail(EINVAL, fmt::format("migration: device in {} cannot change state",
                                    MigrationStateName(current)));
  }
  if (!MigrationStateSupported(flags, target)) {
    return Fail(EINVAL, fmt::format("migration: state {} not supported (flags {:#x})",
                                    MigrationStateName(target), flags));
  }
  if (current == target) return current;

  // Breadth-first search backwards from |target|: the first time |current|
  // turns up as the source of an arc, that arc starts a shortest path.
  // Interior states must all be saving when both ends are (the session
  // carries on) and none otherwise. Under that rule the shortest path is
  // unique for every flag combination, so no tie-break is needed.
  const bool within_session = IsSavingState(current) && IsSavingState(target);
  std::array<bool, kVfioStateCount> seen{};
  std::array<uint32_t, kVfioStateCount> queue{};
  uint32_t head = 0;
  uint32_t tail = 0;
  queue[tail++] = Index(target);
  seen[Index(target)] = true;
  while (head < tail) {
    const vfio_device_mig_state reached = StateAt(queue[head++]);
    for (uint32_t i = 0; i < kVfioStateCount; ++i) {
      const vfio_device_mig_state before = StateAt(i);
      if (seen[i] || !IsMigrationArc(flags, before, reached)) continue;
      if (before == current) return reached;
      if (IsSavingState(before) != within_session) continue;  // Not allowed inside a path.
      seen[i] = true;
      queue[tail++] = i;
    }
  }
  return Fail(EINVAL, fmt::format("migration: no transition from {} to {}",
                                  MigrationStateName(current), MigrationStateName(target)));
}

}  // namespace umdev
