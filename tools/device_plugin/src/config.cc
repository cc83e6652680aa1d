#include "umdev/device_plugin/config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <set>
#include <utility>

namespace umdev::device_plugin {

namespace {

bool IsAlnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

Result<unsigned> ParseCount(std::string_view text, std::string_view what) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return Fail(EINVAL, fmt::format("{}: count '{}' is not a number", what, text));
  }
  return value;
}

}  // namespace

bool IsResourceName(std::string_view name) {
  if (name.empty() || name.size() > 63 || !IsAlnum(name.front()) || !IsAlnum(name.back())) {
    return false;
  }
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return IsAlnum(c) || c == '-' || c == '_' || c == '.'; });
}

Result<ResourceSpec> ParseResourceFlag(std::string_view text) {
  const size_t equals = text.rfind('=');
  const size_t dot = text.find('.');
  if (equals == std::string_view::npos || dot == std::string_view::npos || dot > equals ||
      dot == 0 || dot + 1 == equals) {
    return Fail(EINVAL, fmt::format("--resource '{}' is not PARENT.TYPE=COUNT", text));
  }
  UMDEV_ASSIGN_OR_RETURN(const unsigned count,
                         ParseCount(text.substr(equals + 1), fmt::format("--resource '{}'", text)));
  ResourceSpec spec{.name = std::string(text.substr(0, equals)),
                    .type = std::string(text.substr(dot + 1, equals - dot - 1)),
                    .parents = {{std::string(text.substr(0, dot)), count}}};
  return spec;
}

Result<std::vector<ResourceSpec>> ParseResources(const nlohmann::json& resources) {
  if (!resources.is_array()) return Fail(EINVAL, "\"resources\" is not a list");
  if (resources.size() > kMaxResources) {
    return Fail(EINVAL, fmt::format("more than {} resources", kMaxResources));
  }
  std::vector<ResourceSpec> specs;
  for (size_t i = 0; i < resources.size(); ++i) {
    const nlohmann::json& entry = resources[i];
    const std::string where = fmt::format("resources[{}]", i);
    if (!entry.is_object()) return Fail(EINVAL, where + " is not an object");
    for (const auto& [key, value] : entry.items()) {
      if (key != "name" && key != "type" && key != "parents") {
        return Fail(EINVAL, fmt::format("{}: unknown key \"{}\"", where, key));
      }
    }
    const auto type = entry.find("type");
    if (type == entry.end() || !type->is_string() || type->get<std::string>().empty()) {
      return Fail(EINVAL, where + ": \"type\" is missing or not a string");
    }
    const auto parents = entry.find("parents");
    if (parents == entry.end() || !parents->is_object() || parents->empty()) {
      return Fail(EINVAL, where + ": \"parents\" is not an object of PARENT: COUNT");
    }
    ResourceSpec spec{.name = "", .type = type->get<std::string>(), .parents = {}};
    for (const auto& [parent, count] : parents->items()) {
      if (!count.is_number_unsigned()) {
        return Fail(EINVAL, fmt::format("{}: the count for parent '{}' is not a number", where, parent));
      }
      // Checked against the bound before it is narrowed.
      const uint64_t wide = count.get<uint64_t>();
      if (wide > kMaxInstancesPerParent) {
        return Fail(EINVAL, fmt::format("{}: {} instances on '{}' (at most {})", where, wide, parent,
                                        kMaxInstancesPerParent));
      }
      spec.parents.push_back({parent, static_cast<unsigned>(wide)});
    }
    const auto name = entry.find("name");
    if (name != entry.end()) {
      if (!name->is_string()) return Fail(EINVAL, where + ": \"name\" is not a string");
      spec.name = name->get<std::string>();
    } else {
      spec.name = spec.parents.size() == 1 ? spec.parents.front().parent + "." + spec.type : spec.type;
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

Result<void> ValidateResources(const std::vector<ResourceSpec>& resources) {
  if (resources.empty()) return Fail(EINVAL, "no resources configured");
  if (resources.size() > kMaxResources) {
    return Fail(EINVAL, fmt::format("more than {} resources", kMaxResources));
  }
  std::set<std::string> names;
  std::set<std::pair<std::string, std::string>> pools;
  for (const ResourceSpec& r : resources) {
    if (!IsResourceName(r.name)) {
      return Fail(EINVAL, fmt::format("'{}' is not a resource name (at most 63 of A-Z a-z 0-9 - _ ., "
                                      "a letter or digit at both ends)",
                                      r.name));
    }
    if (!names.insert(r.name).second) return Fail(EINVAL, fmt::format("resource '{}' is named twice", r.name));
    if (r.type.empty() || r.parents.empty()) {
      return Fail(EINVAL, fmt::format("resource '{}' has no type or no parent", r.name));
    }
    uint64_t total = 0;
    for (const ParentPool& pool : r.parents) {
      if (pool.parent.empty()) return Fail(EINVAL, fmt::format("resource '{}': empty parent name", r.name));
      if (pool.count > kMaxInstancesPerParent) {
        return Fail(EINVAL, fmt::format("resource '{}': {} instances on '{}' (at most {})", r.name, pool.count,
                                        pool.parent, kMaxInstancesPerParent));
      }
      if (!pools.insert({pool.parent, r.type}).second) {
        return Fail(EINVAL, fmt::format("{} on '{}' belongs to two resources", r.type, pool.parent));
      }
      total += pool.count;
    }
    if (total > kMaxDevicesPerResource) {
      return Fail(EINVAL, fmt::format("resource '{}': {} instances (at most {})", r.name, total,
                                      kMaxDevicesPerResource));
    }
  }
  return {};
}

}  // namespace umdev::device_plugin
