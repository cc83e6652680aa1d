// mdevctl-compatible text and JSON output.
#include "umdev/cli/mdevctl_format.h"

#include <fmt/format.h>

#include <map>
#include <vector>

namespace umdev::cli {
namespace {

using Json = nlohmann::json;

bool Matches(const std::optional<std::string>& filter, const std::string& value) {
  return !filter.has_value() || *filter == value;
}

std::string Flatten(std::string text) {
  // mdevctl prints a multi-line description on one line, lines joined by ", ".
  for (size_t at; (at = text.find('\n')) != std::string::npos;) text.replace(at, 1, ", ");
  return text;
}

// The devices of a list reply, filtered and grouped by parent in name order,
// as mdevctl's BTreeMap orders them.
std::map<std::string, std::vector<Json>> ByParent(const Json& mdevs,
                                                  const std::optional<std::string>& uuid,
                                                  const std::optional<std::string>& parent) {
  std::map<std::string, std::vector<Json>> grouped;
  for (const Json& mdev : mdevs) {
    const auto name = mdev.at("parent").get<std::string>();
    if (Matches(uuid, mdev.at("uuid").get<std::string>()) && Matches(parent, name)) {
      grouped[name].push_back(mdev);
    }
  }
  return grouped;
}

Json Definition(const Json& mdev) {
  return Json{{"mdev_type", mdev.at("type")}, {"start", "manual"}, {"attrs", Json::array()}};
}

}  // namespace

std::string FormatTypesText(const Json& parents, const std::optional<std::string>& parent) {
  std::string out;
  for (const Json& p : parents) {
    const auto name = p.at("name").get<std::string>();
    if (!Matches(parent, name)) continue;
    out += name + "\n";
    for (const Json& type : p.at("types")) {
      out += fmt::format("  {}\n", type.at("id").get<std::string>());
      out += fmt::format("    Available instances: {}\n", type.at("available_instances").get<unsigned>());
      out += fmt::format("    Device API: {}\n", type.at("device_api").get<std::string>());
      const auto pretty = type.at("name").get<std::string>();
      if (!pretty.empty()) out += fmt::format("    Name: {}\n", pretty);
      const auto description = type.at("description").get<std::string>();
      if (!description.empty()) out += fmt::format("    Description: {}\n", Flatten(description));
    }
  }
  return out;
}

std::string FormatTypesJson(const Json& parents, const std::optional<std::string>& parent) {
  Json out = Json::array();
  for (const Json& p : parents) {
    const auto name = p.at("name").get<std::string>();
    if (!Matches(parent, name)) continue;
    Json types = Json::array();
    for (const Json& type : p.at("types")) {
      Json info{{"available_instances", type.at("available_instances")},
                {"device_api", type.at("device_api")},
                {"name", type.at("name")}};
      const auto description = type.at("description").get<std::string>();
      if (!description.empty()) info["description"] = Flatten(description);
      types.push_back(Json{{type.at("id").get<std::string>(), std::move(info)}});
    }
    out.push_back(Json{{name, std::move(types)}});
  }
  return out.dump(2) + "\n";
}

std::string FormatListText(const Json& mdevs, const std::optional<std::string>& uuid,
                           const std::optional<std::string>& parent) {
  std::string out;
  for (const auto& [name, devices] : ByParent(mdevs, uuid, parent)) {
    for (const Json& mdev : devices) {
      out += fmt::format("{} {} {} manual\n", mdev.at("uuid").get<std::string>(), name,
                         mdev.at("type").get<std::string>());
    }
  }
  return out;
}

std::string FormatListJson(const Json& mdevs, const std::optional<std::string>& uuid,
                           const std::optional<std::string>& parent) {
  const auto grouped = ByParent(mdevs, uuid, parent);
  if (uuid.has_value()) {
    // A single device prints as its definition, ready for --jsonfile.
    for (const auto& [name, devices] : grouped) return Definition(devices.front()).dump(2) + "\n";
    return "";
  }
  Json out = Json::array();
  for (const auto& [name, devices] : grouped) {
    Json children = Json::array();
    for (const Json& mdev : devices) {
      children.push_back(Json{{mdev.at("uuid").get<std::string>(), Definition(mdev)}});
    }
    out.push_back(Json{{name, std::move(children)}});
  }
  return out.dump(2) + "\n";
}

}  // namespace umdev::cli
