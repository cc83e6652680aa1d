// Definition: mdevctl's config JSON, parsed and printed.
#include "umdev/control/definition.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace umdev::control {

using Json = nlohmann::json;

Result<AttributeList> ParseAttributes(const Json& attrs) {
  AttributeList list;
  if (attrs.is_null()) return list;
  if (!attrs.is_array()) return Fail(EINVAL, "attributes field is not an array");
  for (const Json& attr : attrs) {
    if (!attr.is_object()) return Fail(EINVAL, "invalid JSON format for attribute: not an object");
    if (attr.size() != 1) return Fail(EINVAL, "invalid JSON format for attribute: too many fields");
    const auto only = attr.begin();
    // mdevctl 1.3 panics on a non-string value; refusing it is the sane reading.
    if (!only.value().is_string()) {
      return Fail(EINVAL, "invalid JSON format for attribute: value is not a string");
    }
    list.emplace_back(only.key(), only.value().get<std::string>());
  }
  return list;
}

Result<Definition> ParseDefinition(const Json& json) {
  if (!json.is_object() || !json.contains("mdev_type") || !json.contains("start") ||
      json["mdev_type"].is_null() || json["start"].is_null() || !json["mdev_type"].is_string()) {
    return Fail(EINVAL, "invalid json");
  }
  Definition definition;
  definition.mdev_type = json["mdev_type"].get<std::string>();
  // As mdevctl: anything but the string "auto" means manual.
  definition.autostart = json["start"].is_string() && json["start"].get<std::string>() == "auto";
  UMDEV_ASSIGN_OR_RETURN(definition.attrs,
                         ParseAttributes(json.contains("attrs") ? json["attrs"] : Json()));
  return definition;
}

nlohmann::ordered_json AttributesToJson(const AttributeList& attrs) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& [name, value] : attrs) list.push_back(nlohmann::ordered_json{{name, value}});
  return list;
}

nlohmann::ordered_json DefinitionToJson(const Definition& definition) {
  return nlohmann::ordered_json{{"mdev_type", definition.mdev_type},
              {"start", definition.autostart ? "auto" : "manual"},
              {"attrs", AttributesToJson(definition.attrs)}};
}

Result<Json> ParseJsonText(std::string_view text) {
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& error) {
    // nlohmann reports a byte offset (1-based, one past the offending byte);
    // serde_json reports line and column of it.
    const size_t at = error.byte == 0 ? 0 : std::min<size_t>(error.byte - 1, text.size());
    size_t line = 1, column = 0;
    for (size_t i = 0; i < at; ++i) {
      if (text[i] == '\n') {
        ++line;
        column = 0;
      } else {
        ++column;
      }
    }
    bool only_space = true;
    for (size_t i = at; i < text.size(); ++i) only_space = only_space && std::isspace(static_cast<unsigned char>(text[i]));
    const char* what = only_space ? "EOF while parsing a value" : "expected value";
    if (only_space) {
      // serde_json points at the last character read before the end.
      column = 0;
      line = 1;
      for (char c : text) c == '\n' ? (++line, column = 0) : ++column;
    } else {
      ++column;
    }
    return Fail(EINVAL, fmt::format("{} at line {} column {}", what, line, column));
  } catch (const Json::exception& error) {
    // A number that overflows a double (1e999): serde_json refuses it too.
    // Found by fuzz_control; a definition file holding one stopped umdevd.
    return Fail(EINVAL, std::string("number out of range: ") + error.what());
  }
}

}  // namespace umdev::control
