// mdevctl's output formats (checked against Debian's mdevctl 1.4), produced
// from umdevd's control replies so umdevctl prints exactly what scripts
// written for mdevctl expect. Each function returns the whole output: text
// ends in a newline, JSON in none, as mdevctl prints them.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "umdev/control/definition.h"

namespace umdev::cli {

// `types`: parent, "  <type>", then Available instances, Device API, Name and
// Description (newlines as ", "), each indented four spaces; parents and
// types in name order. |parents| is the "parents" array of a types reply;
// |parent| filters.
std::string FormatTypesText(const nlohmann::json& parents, const std::optional<std::string>& parent);
// `types --dumpjson`: [{"<parent>": [{"<type>": {...}}], ...}] (one object
// holding every parent), or [] when there is none. Name and description are
// left out when empty, as mdevctl leaves out absent sysfs files.
std::string FormatTypesJson(const nlohmann::json& parents, const std::optional<std::string>& parent);

// One device as mdevctl's list sees it.
struct DeviceRow {
  std::string uuid;
  std::string parent;
  std::string type;
  bool autostart = false;
  bool active = false;
  bool defined = false;
  control::AttributeList attrs;
  // umdev: the VM a running device serves ("NAME (pid N, accel A, uuid U)"),
  // shown by `list -v` after the attributes; empty: none.
  std::string vm;
};

enum class Listing { kActive, kDefined };

// `list` / `list -d`: "<uuid> <parent> <type> <auto|manual>" plus " (defined)"
// (active listing) or " (active)" (defined listing); with |verbose|, the
// attributes as "  Attrs:" and "    @{i}: {"name":"value"}". Rows are
// ordered by parent, then UUID.
std::string FormatListText(std::vector<DeviceRow> rows, Listing listing, bool verbose);
// `list --dumpjson`: [{"<parent>": [{"<uuid>": {"attrs":..,"mdev_type":..,
// "start":..}}]}], or [] when empty. With |single| (a UUID was asked for and
// exactly one row matched) the bare config object of that row.
std::string FormatListJson(std::vector<DeviceRow> rows, bool single);

// The verbose attribute block ("  Attrs:\n    @{0}: ...\n"), empty for none.
std::string FormatAttrs(const control::AttributeList& attrs);

}  // namespace umdev::cli
