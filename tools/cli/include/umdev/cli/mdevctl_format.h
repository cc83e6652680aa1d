// mdevctl's output formats (v1.3), produced from umdevd's control replies so
// umdevctl prints exactly what scripts written for mdevctl expect.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace umdev::cli {

// `types`: parent, "  <type>", then Available instances, Device API, Name and
// Description (newlines as ", "), each indented four spaces. |parents| is the
// "parents" array of a types reply; |parent| filters.
std::string FormatTypesText(const nlohmann::json& parents, const std::optional<std::string>& parent);
// `types --dumpjson`: [{"<parent>": [{"<type>": {...}}]}], pretty-printed.
std::string FormatTypesJson(const nlohmann::json& parents, const std::optional<std::string>& parent);

// `list`: "<uuid> <parent> <type> manual" per active device (umdevd's devices
// are transient until definitions exist). |mdevs| is a list reply's "mdevs".
std::string FormatListText(const nlohmann::json& mdevs, const std::optional<std::string>& uuid,
                           const std::optional<std::string>& parent);
// `list --dumpjson`: [{"<parent>": [{"<uuid>": {"attrs":[],"mdev_type":..,
// "start":"manual"}}]}]; with |uuid|, the bare config object of that device.
std::string FormatListJson(const nlohmann::json& mdevs, const std::optional<std::string>& uuid,
                           const std::optional<std::string>& parent);

}  // namespace umdev::cli
