// umdevctl's commands that change state: define, undefine, modify, start.
#include <fmt/format.h>
#include <strings.h>

#include "command_support.h"
#include "umdev/cli/commands.h"
#include "umdev/cli/mdevctl_format.h"

namespace umdev::cli {

using namespace detail;

namespace {

const ActiveDevice* FindActive(const std::vector<ActiveDevice>& active, const std::string& uuid) {
  for (const ActiveDevice& a : active) {
    if (a.uuid == uuid) return &a;
  }
  return nullptr;
}

// mdevctl's get_defined_device: exactly one definition or its errors.
Try<Defined> OneDefinition(const std::vector<Defined>& all, const std::string& uuid,
                           const std::optional<std::string>& parent) {
  const std::vector<Defined> found = Matching(all, uuid, parent);
  if (found.empty()) {
    return std::unexpected(Failure{
        parent.has_value() ? fmt::format("Mediated device {}/{} is not defined", *parent, uuid)
                           : fmt::format("Mediated device {} is not defined", uuid),
        ""});
  }
  if (found.size() > 1) {
    return std::unexpected(Failure{fmt::format("Multiple definitions found for {}, specify a parent", uuid), ""});
  }
  return found.front();
}

std::string AttributeHint(const std::string& uuid, const control::AttributeList& attrs) {
  return attrs.empty() ? fmt::format("Device {} has no attributes", uuid) : FormatAttrs(attrs);
}

// mdevctl's checks before writing to "create", in its order and words.
std::optional<Failure> CheckCreate(const Json& parents, const std::vector<ActiveDevice>& active,
                                   const std::string& uuid, const std::string& parent,
                                   const std::string& type) {
  if (const ActiveDevice* existing = FindActive(active, uuid)) {
    if (existing->parent != parent) return Failure{"Device exists under different parent", ""};
    if (existing->type != type) return Failure{"Device exists with different type", ""};
    return Failure{"Device already exists", ""};
  }
  const Json* found = nullptr;
  std::optional<std::string> similar;
  for (const Json& p : parents) {
    const auto name = p.at("name").get<std::string>();
    if (name == parent) found = &p;
    if (!similar.has_value() && strcasecmp(name.c_str(), parent.c_str()) == 0) similar = name;
  }
  if (found == nullptr) {
    if (similar.has_value()) {
      return Failure{fmt::format("Unable to find parent device '{}'. Did you mean '{}'?", parent, *similar), ""};
    }
    return Failure{fmt::format("Unable to find parent device '{}'", parent), ""};
  }
  for (const Json& t : found->at("types")) {
    if (t.at("id") != type) continue;
    if (t.at("available_instances").get<unsigned>() == 0) {
      return Failure{fmt::format("No available instances of {} on {}", type, parent), ""};
    }
    return std::nullopt;
  }
  return Failure{fmt::format("Parent {} does not support mdev type {}", parent, type), ""};
}

}  // namespace

Outcome Define(const Transport& call, const DefineOptions& options) {
  const std::string uuid = options.uuid.value_or(Uuid::Generate()).ToString();
  auto defined = Definitions(call);
  if (!defined.has_value()) return Report(defined.error());
  std::string parent;
  control::Definition definition;
  if (options.jsonfile.has_value()) {
    // mdevctl's order: the file opens, a parent is given, nothing is
    // defined there yet, then the contents parse.
    const std::string& file = *options.jsonfile;
    if (auto readable = CheckReadable(file, "Unable to read file " + QuotedPath(file)); !readable.has_value()) {
      return Report(readable.error());
    }
    if (!options.parent.has_value()) {
      return Report(Failure{"Parent device required to define device via " + QuotedPath(file), ""});
    }
    parent = *options.parent;
    if (!Matching(*defined, uuid, parent).empty()) {
      return Report(Failure{fmt::format("Cowardly refusing to overwrite existing config for {}/{}", parent, uuid), ""});
    }
    auto loaded = LoadJsonFile(file, "Unable to read jsonfile " + QuotedPath(file));
    if (!loaded.has_value()) return Report(loaded.error());
    definition = std::move(*loaded);
  } else {
    std::optional<std::string> found_parent = options.parent;
    std::optional<std::string> type = options.type;
    if (options.uuid.has_value()) {
      auto active = ActiveDevices(call);
      if (!active.has_value()) return Report(active.error());
      const ActiveDevice* running = FindActive(*active, uuid);
      if (!options.parent.has_value() && (running == nullptr || options.type.has_value())) {
        return Report(Failure{"No parent specified", ""});
      }
      // Defining a running device takes its parent and type (promotes a
      // transient device).
      if (running != nullptr) {
        if (!found_parent.has_value()) found_parent = running->parent;
        if (!type.has_value()) type = running->type;
      }
    }
    if (!found_parent.has_value()) return Report(Failure{"No parent specified", ""});
    if (!type.has_value()) return Report(Failure{"No type specified", ""});
    parent = *found_parent;
    if (!Matching(*defined, uuid, parent).empty()) {
      return Report(Failure{fmt::format("Device {} on {} already defined", uuid, parent), ""});
    }
    definition = control::Definition{*type, options.autostart, {}};
  }
  if (auto written = WriteDefinition(call, parent, uuid, definition, false); !written.has_value()) {
    return Report(written.error());
  }
  return Outcome{0, options.uuid.has_value() ? "" : uuid + "\n", ""};
}

Outcome Undefine(const Transport& call, const Uuid& uuid, const std::optional<std::string>& parent) {
  auto defined = Definitions(call);
  if (!defined.has_value()) return Report(defined.error());
  const std::string id = uuid.ToString();
  const std::vector<Defined> found = Matching(*defined, id, parent);
  if (found.empty()) return Report(Failure{"No devices match the specified uuid", ""});
  std::string warnings;
  for (const Defined& d : found) {
    auto removed = Ask(call, {{"cmd", "undefine"}, {"parent", d.parent}, {"uuid", id}});
    if (!removed.has_value()) {
      warnings += fmt::format("Undefine of {} on parent {} failed with error: {}\n",
                              id, d.parent, removed.error().message);
    }
  }
  if (!warnings.empty()) {
    Outcome failed = Report(Failure{"Undefine failed", ""});
    failed.err = warnings + failed.err;
    return failed;
  }
  return Outcome{};
}

namespace {

// Writes |attrs| to the running device in order (modify --live); umdev has
// no call-out scripts, so it applies them itself.
Try<void> ApplyLive(const Transport& call, const std::string& uuid, const control::AttributeList& attrs) {
  auto listed = Ask(call, {{"cmd", "attr-list"}, {"uuid", uuid}});
  if (!listed.has_value()) return std::unexpected(listed.error());
  for (const auto& [name, value] : attrs) {
    bool exists = false;
    for (const Json& a : (*listed)["attributes"]) exists = exists || a.at("name") == name;
    if (!exists) return std::unexpected(Failure{fmt::format("Invalid attribute '{}'", name), ""});
    auto reply = call({{"cmd", "attr-set"}, {"uuid", uuid}, {"name", name}, {"value", value}});
    if (!reply.has_value()) return std::unexpected(Failure{reply.error().Describe(), ""});
    if (reply->value("ok", false) != true) {
      return std::unexpected(WithOsError(fmt::format("Failed to write {} to attribute {}", value, name),
                                         reply->value("errno", EIO)));
    }
  }
  return {};
}

Outcome ModifyLive(const Transport& call, const ModifyOptions& options,
                   const std::vector<Defined>& defined) {
  const std::string uuid = options.uuid.ToString();
  if (options.type.has_value()) return Report(Failure{"'type' cannot be changed on active mdev", ""});
  if (options.autostart) return Report(Failure{"'auto' cannot be changed on active mdev", ""});
  if (options.manual) return Report(Failure{"'manual' cannot be changed on active mdev", ""});
  auto active = ActiveDevices(call);
  if (!active.has_value()) return Report(active.error());
  const ActiveDevice* running = FindActive(*active, uuid);
  if (running == nullptr || (options.parent.has_value() && *options.parent != running->parent)) {
    return Report(Failure{options.parent.has_value()
                              ? fmt::format("Mediated device {}/{} is not active", *options.parent, uuid)
                              : fmt::format("Mediated device {} is not active", uuid),
                          ""});
  }
  if (!options.jsonfile.has_value()) {
    return Report(Failure{"'live' option must be used with 'jsonfile' option", ""});
  }
  auto loaded = LoadJsonFile(*options.jsonfile, "Unable to read file " + QuotedPath(*options.jsonfile));
  if (!loaded.has_value()) return Report(loaded.error());
  if (loaded->mdev_type != running->type) {
    return Report(Failure{"'type' cannot be changed on active mdev", ""});
  }
  if (options.defined) {
    auto stored = OneDefinition(defined, uuid, running->parent);
    if (!stored.has_value()) return Report(stored.error());
    if (stored->definition.mdev_type != running->type) {
      return Report(Failure{"'type' of active and defined mdev does not match", ""});
    }
  }
  if (auto applied = ApplyLive(call, uuid, loaded->attrs); !applied.has_value()) {
    return Report(applied.error());
  }
  if (options.defined) {
    if (auto written = WriteDefinition(call, running->parent, uuid, *loaded, true); !written.has_value()) {
      return Report(written.error());
    }
  }
  return Outcome{};
}

}  // namespace

Outcome Modify(const Transport& call, const ModifyOptions& options) {
  auto defined = Definitions(call);
  if (!defined.has_value()) return Report(defined.error());
  if (options.live) return ModifyLive(call, options, *defined);
  const std::string uuid = options.uuid.ToString();
  std::string parent;
  control::Definition definition;
  if (options.jsonfile.has_value()) {
    if (!options.parent.has_value()) {
      return Report(Failure{"Parent device required to modify device via json file", ""});
    }
    parent = *options.parent;
    auto loaded = LoadJsonFile(*options.jsonfile, "Unable to read file " + QuotedPath(*options.jsonfile));
    if (!loaded.has_value()) return Report(loaded.error());
    definition = std::move(*loaded);
  } else {
    auto stored = OneDefinition(*defined, uuid, options.parent);
    if (!stored.has_value()) return Report(stored.error());
    parent = stored->parent;
    definition = std::move(stored->definition);
    if (options.type.has_value()) definition.mdev_type = *options.type;
    if (options.autostart && options.manual) {
      return Report(Failure{"'auto' and 'manual' are mutually exclusive", ""});
    }
    if (options.autostart) definition.autostart = true;
    if (options.manual) definition.autostart = false;
  }
  auto& attrs = definition.attrs;
  if (options.addattr.has_value()) {
    if (!options.value.has_value()) return Report(Failure{"No attribute value provided", ""});
    if (options.index.has_value() && *options.index > attrs.size()) {
      return Report(Failure{fmt::format("Attribute index {} is invalid\n{}", *options.index,
                                        AttributeHint(uuid, attrs)), ""});
    }
    const size_t at = options.index.value_or(static_cast<unsigned>(attrs.size()));
    attrs.insert(attrs.begin() + static_cast<std::ptrdiff_t>(at), {*options.addattr, *options.value});
  } else if (options.delattr) {
    if (options.index.has_value()) {
      if (*options.index >= attrs.size()) {
        return Report(Failure{fmt::format("Attribute index {} is invalid\n{}", *options.index,
                                          AttributeHint(uuid, attrs)), ""});
      }
      attrs.erase(attrs.begin() + static_cast<std::ptrdiff_t>(*options.index));
    } else if (!attrs.empty()) {
      attrs.pop_back();
    }
  }
  if (auto written = WriteDefinition(call, parent, uuid, definition, true); !written.has_value()) {
    return Report(written.error());
  }
  return Outcome{};
}

Outcome Start(const Transport& call, const StartOptions& options) {
  std::string uuid = options.uuid.value_or(Uuid::Generate()).ToString();
  std::string parent, type;
  control::AttributeList attrs;
  if (options.jsonfile.has_value()) {
    // mdevctl's order: read and parse, then the options, then the contents.
    auto json = ReadJsonFile(*options.jsonfile, "Unable to read jsonfile " + QuotedPath(*options.jsonfile));
    if (!json.has_value()) return Report(json.error());
    if (options.type.has_value()) {
      return Report(Failure{"Device type cannot be specified separately from json file", ""});
    }
    if (!options.parent.has_value()) {
      return Report(Failure{"Parent device required to start device via json file", ""});
    }
    auto loaded = DefinitionFrom(*json);
    if (!loaded.has_value()) return Report(loaded.error());
    parent = *options.parent;
    type = loaded->mdev_type;
    attrs = std::move(loaded->attrs);
  } else {
    std::optional<std::string> maybe_parent = options.parent, maybe_type = options.type;
    if (options.uuid.has_value()) {
      auto defined = Definitions(call);
      if (!defined.has_value()) return Report(defined.error());
      const std::vector<Defined> found = Matching(*defined, uuid, options.parent);
      if (found.size() > 1) {
        return Report(Failure{fmt::format("Multiple definitions found for device {}. Please specify a parent.", uuid), ""});
      }
      if (found.size() == 1) {
        const Defined& d = found.front();
        if (options.type.has_value() && *options.type != d.definition.mdev_type) {
          return Report(Failure{fmt::format("Device {} already exists on parent {} with type {}",
                                            uuid, d.parent, d.definition.mdev_type), ""});
        }
        maybe_parent = d.parent;
        maybe_type = d.definition.mdev_type;
        attrs = d.definition.attrs;
      }
    }
    if (maybe_type.has_value() && !maybe_parent.has_value()) {
      return Report(Failure{"can't provide type without parent", ""});
    }
    if (!maybe_type.has_value() || !maybe_parent.has_value()) {
      return Report(Failure{"Device is insufficiently specified", ""});
    }
    parent = *maybe_parent;
    type = *maybe_type;
  }
  attrs.insert(attrs.end(), options.extra_attrs.begin(), options.extra_attrs.end());

  auto types = Ask(call, {{"cmd", "types"}});
  if (!types.has_value()) return Report(types.error());
  auto active = ActiveDevices(call);
  if (!active.has_value()) return Report(active.error());
  if (auto problem = CheckCreate((*types)["parents"], *active, uuid, parent, type)) {
    return Report(*problem);
  }
  auto reply = call({{"cmd", "start"}, {"parent", parent}, {"type", type}, {"uuid", uuid},
                     {"attrs", control::AttributesToJson(attrs)}});
  if (!reply.has_value()) return Report(Failure{reply.error().Describe(), ""});
  if (reply->value("ok", false) != true) {
    const int code = reply->value("errno", EIO);
    if (reply->contains("attr")) {
      const Json& attr = (*reply)["attr"];
      const auto name = attr.value("name", std::string());
      if (!attr.value("exists", false)) return Report(Failure{fmt::format("Invalid attribute '{}'", name), ""});
      return Report(WithOsError(fmt::format("Failed to write {} to attribute {}",
                                            attr.value("value", std::string()), name), code));
    }
    return Report(WithOsError(fmt::format("Failed to create mdev {}, type {} on {}", uuid, type, parent), code));
  }
  return Outcome{0, options.uuid.has_value() ? "" : uuid + "\n", ""};
}

}  // namespace umdev::cli
