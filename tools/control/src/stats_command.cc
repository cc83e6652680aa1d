// Stats: a snapshot of every instance's usage for operators' views.
#include "stats_command.h"

#include <time.h>

#include <array>
#include <charconv>
#include <string_view>

#include "umdev/mdev_core/migration.h"

namespace umdev::control {
namespace {

using Json = nlohmann::json;

// The vendor attributes that are counters a view turns into rates or totals.
constexpr std::array<std::string_view, 4> kCounters = {"busy_ns", "commands", "bytes", "errors"};

uint64_t MonotonicNs() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(now.tv_nsec);
}

Json Counters(Registry& registry, const Uuid& uuid) {
  Json counters = Json::object();
  auto attributes = registry.MdevAttributes(uuid);
  if (!attributes.has_value()) return counters;
  for (const DeviceAttribute& attribute : *attributes) {
    if (!attribute.readable) continue;
    for (std::string_view name : kCounters) {
      if (attribute.name != name) continue;
      auto text = registry.ReadMdevAttribute(uuid, name);
      uint64_t value = 0;
      if (text.has_value() &&
          std::from_chars(text->data(), text->data() + text->size(), value).ec == std::errc()) {
        counters[std::string(name)] = value;
      }
    }
  }
  return counters;
}

}  // namespace

Json Stats(Registry& registry) {
  Json devices = Json::array();
  const uint64_t time_ns = MonotonicNs();
  for (const MdevStatus& mdev : registry.Mdevs()) {
    auto usage = registry.MdevUsage(mdev.uuid);
    if (!usage.has_value()) continue;  // Removed since the listing.
    Json entry = {{"uuid", mdev.uuid.ToString()},     {"parent", mdev.parent},
                  {"type", mdev.type_id},             {"open", usage->open},
                  {"locked_bytes", usage->locked_bytes}, {"counters", Counters(registry, mdev.uuid)}};
    if (usage->migration_state.has_value()) {
      entry["migration_state"] = std::string(MigrationStateName(*usage->migration_state));
    }
    if (mdev.vm.has_value()) {
      entry["vm"] = {{"uuid", mdev.vm->uuid},
                     {"name", mdev.vm->name},
                     {"pid", mdev.vm->pid},
                     {"accel", mdev.vm->accel}};
    }
    devices.push_back(std::move(entry));
  }
  return {{"ok", true}, {"time_ns", time_ns}, {"devices", std::move(devices)}};
}

}  // namespace umdev::control
