// Definition: one persistent mdev in mdevctl's config-file JSON,
//   {"mdev_type": T, "start": "auto"|"manual", "attrs": [{"name": "value"}, ...]},
// shared by umdevctl (--jsonfile, output) and umdevd (the store, autostart).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "umdev/common/error.h"

namespace umdev::control {

// An ordered attribute list: mdevctl writes them in this order on start.
using AttributeList = std::vector<std::pair<std::string, std::string>>;

// A value type. Thread-compatible.
struct Definition {
  std::string mdev_type;
  bool autostart = false;
  AttributeList attrs;

  bool operator==(const Definition&) const = default;
};

// Validates |json| as mdevctl does when loading a config, with its messages:
// "invalid json" (no mdev_type or start), "attributes field is not an array",
// "invalid JSON format for attribute: not an object" / "...: too many fields".
// Errors: EINVAL with that message.
Result<Definition> ParseDefinition(const nlohmann::json& json);
// The config object with mdevctl's key order (mdev_type, start, attrs), which
// its serializer keeps as inserted rather than sorted.
nlohmann::ordered_json DefinitionToJson(const Definition& definition);
// The "attrs" array alone.
nlohmann::ordered_json AttributesToJson(const AttributeList& attrs);
// Parses an "attrs" array. Errors: EINVAL with mdevctl's messages.
Result<AttributeList> ParseAttributes(const nlohmann::json& attrs);

// Parses JSON text, describing a syntax error as serde_json (mdevctl's
// parser) does: "<what> at line L column C". Errors: EINVAL.
Result<nlohmann::json> ParseJsonText(std::string_view text);

}  // namespace umdev::control
