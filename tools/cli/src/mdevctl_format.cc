// mdevctl-compatible text and JSON output.
#include "umdev/cli/mdevctl_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace umdev::cli {
namespace {

using Json = nlohmann::json;
// Output objects keep insertion order, as mdevctl's serializer does.
using OutJson = nlohmann::ordered_json;

bool Matches(const std::optional<std::string>& filter, const std::string& value) {
  return !filter.has_value() || *filter == value;
}

std::string Flatten(std::string text) {
  // mdevctl trims the description and prints its lines joined by ", ".
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  for (size_t at; (at = text.find('\n')) != std::string::npos;) text.replace(at, 1, ", ");
  return text;
}

// Parents (in name order) with their types (in id order), filtered.
std::map<std::string, std::vector<Json>> SortedTypes(const Json& parents,
                                                     const std::optional<std::string>& parent) {
  std::map<std::string, std::vector<Json>> sorted;
  for (const Json& p : parents) {
    const auto name = p.at("name").get<std::string>();
    if (!Matches(parent, name)) continue;
    std::vector<Json> types(p.at("types").begin(), p.at("types").end());
    std::sort(types.begin(), types.end(),
              [](const Json& a, const Json& b) { return a.at("id") < b.at("id"); });
    sorted[name] = std::move(types);
  }
  return sorted;
}

void SortRows(std::vector<DeviceRow>& rows) {
  std::stable_sort(rows.begin(), rows.end(), [](const DeviceRow& a, const DeviceRow& b) {
    return std::tie(a.parent, a.uuid) < std::tie(b.parent, b.uuid);
  });
}

OutJson ConfigOf(const DeviceRow& row) {
  return control::DefinitionToJson({row.type, row.autostart, row.attrs});
}

}  // namespace

std::string FormatTypesText(const Json& parents, const std::optional<std::string>& parent) {
  std::string out;
  for (const auto& [name, types] : SortedTypes(parents, parent)) {
    out += name + "\n";
    for (const Json& type : types) {
      out += fmt::format("  {}\n", type.at("id").get<std::string>());
      out += fmt::format("    Available instances: {}\n", type.at("available_instances").get<unsigned>());
      out += fmt::format("    Device API: {}\n", type.at("device_api").get<std::string>());
      const auto pretty = type.at("name").get<std::string>();
      if (!pretty.empty()) out += fmt::format("    Name: {}\n", pretty);
      const auto description = Flatten(type.at("description").get<std::string>());
      if (!description.empty()) out += fmt::format("    Description: {}\n", description);
    }
  }
  return out;
}

std::string FormatTypesJson(const Json& parents, const std::optional<std::string>& parent) {
  OutJson all = OutJson::object();
  for (const auto& [name, types] : SortedTypes(parents, parent)) {
    OutJson list = OutJson::array();
    for (const Json& type : types) {
      OutJson info{{"available_instances", type.at("available_instances")},
                {"device_api", type.at("device_api")}};
      const auto pretty = type.at("name").get<std::string>();
      if (!pretty.empty()) info["name"] = pretty;
      const auto description = Flatten(type.at("description").get<std::string>());
      if (!description.empty()) info["description"] = description;
      list.push_back(OutJson{{type.at("id").get<std::string>(), std::move(info)}});
    }
    all[name] = std::move(list);
  }
  return (all.empty() ? OutJson::array() : OutJson::array({std::move(all)})).dump(2);
}

std::string FormatAttrs(const control::AttributeList& attrs) {
  if (attrs.empty()) return "";
  std::string out = "  Attrs:\n";
  for (size_t i = 0; i < attrs.size(); ++i) {
    // Unescaped, exactly as mdevctl formats it.
    out += fmt::format("    @{{{}}}: {{\"{}\":\"{}\"}}\n", i, attrs[i].first, attrs[i].second);
  }
  return out;
}

std::string FormatListText(std::vector<DeviceRow> rows, Listing listing, bool verbose) {
  SortRows(rows);
  std::string out;
  for (const DeviceRow& row : rows) {
    out += fmt::format("{} {} {} {}", row.uuid, row.parent, row.type,
                       row.autostart ? "auto" : "manual");
    if (listing == Listing::kDefined && row.active) out += " (active)";
    if (listing == Listing::kActive && row.defined) out += " (defined)";
    out += "\n";
    if (verbose) out += FormatAttrs(row.attrs);
    if (verbose && !row.vm.empty()) out += "  VM: " + row.vm + "\n";
  }
  return out;
}

std::string FormatListJson(std::vector<DeviceRow> rows, bool single) {
  SortRows(rows);
  if (single && rows.size() == 1) return ConfigOf(rows.front()).dump(2);
  OutJson all = OutJson::object();
  for (const DeviceRow& row : rows) {
    if (!all.contains(row.parent)) all[row.parent] = OutJson::array();
    all[row.parent].push_back(OutJson{{row.uuid, ConfigOf(row)}});
  }
  return (all.empty() ? OutJson::array() : OutJson::array({std::move(all)})).dump(2);
}

}  // namespace umdev::cli
