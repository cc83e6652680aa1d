// umdevctl: mdevctl's command surface over umdevd's control socket.
// GCC 12 reports a false null dereference inside CLI11's string splitting
// once a vector option is instantiated (libstdc++ relocation, inlined).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "umdev/cli/mdevctl_format.h"
#include "umdev/common/uuid.h"
#include "umdev/control/client.h"

namespace {

using umdev::Error;
using umdev::Result;
using umdev::control::ControlClient;
using Json = nlohmann::json;

struct Globals {
  std::string state_dir;
};

int Report(const std::string& message) {
  std::fprintf(stderr, "Error: %s\n", message.c_str());
  return 1;
}

int Report(const Error& error) { return Report(error.Describe()); }

Result<Json> Call(const Globals& globals, const Json& request) {
  UMDEV_ASSIGN_OR_RETURN(ControlClient client,
                         ControlClient::Connect(globals.state_dir + "/control.sock"));
  return client.Call(request);
}

int Print(const std::string& text) {
  std::fputs(text.c_str(), stdout);
  return 0;
}

int Types(const Globals& globals, const std::optional<std::string>& parent, bool dumpjson) {
  auto reply = Call(globals, {{"cmd", "types"}});
  if (!reply.has_value()) return Report(reply.error());
  const Json& parents = (*reply)["parents"];
  return Print(dumpjson ? umdev::cli::FormatTypesJson(parents, parent)
                        : umdev::cli::FormatTypesText(parents, parent));
}

int List(const Globals& globals, const std::optional<std::string>& uuid,
         const std::optional<std::string>& parent, bool dumpjson) {
  std::optional<std::string> canonical;
  if (uuid.has_value()) {
    auto parsed = umdev::Uuid::Parse(*uuid);
    if (!parsed.has_value()) return Report(parsed.error());
    canonical = parsed->ToString();
  }
  auto reply = Call(globals, {{"cmd", "list"}});
  if (!reply.has_value()) return Report(reply.error());
  const Json& mdevs = (*reply)["mdevs"];
  return Print(dumpjson ? umdev::cli::FormatListJson(mdevs, canonical, parent)
                        : umdev::cli::FormatListText(mdevs, canonical, parent));
}

// mdevctl's checks before writing to "create", with its messages.
std::optional<std::string> CheckStart(const Json& parents, const Json& mdevs,
                                      const std::string& uuid, const std::string& parent,
                                      const std::string& type) {
  for (const Json& mdev : mdevs) {
    if (mdev["uuid"] != uuid) continue;
    if (mdev["parent"] != parent) return "Device exists under different parent";
    if (mdev["type"] != type) return "Device exists with different type";
    return "Device already exists";
  }
  const Json* found = nullptr;
  std::optional<std::string> similar;
  for (const Json& p : parents) {
    const auto name = p["name"].get<std::string>();
    if (name == parent) found = &p;
    if (strcasecmp(name.c_str(), parent.c_str()) == 0) similar = name;
  }
  if (found == nullptr) {
    if (similar.has_value()) {
      return fmt::format("Unable to find parent device '{}'. Did you mean '{}'?", parent, *similar);
    }
    return fmt::format("Unable to find parent device '{}'", parent);
  }
  for (const Json& t : (*found)["types"]) {
    if (t["id"] != type) continue;
    if (t["available_instances"].get<unsigned>() == 0) {
      return fmt::format("No available instances of {} on {}", type, parent);
    }
    return std::nullopt;
  }
  return fmt::format("Parent {} does not support mdev type {}", parent, type);
}

// "name=value" from --attr; the value may be empty or contain '='.
std::optional<std::pair<std::string, std::string>> SplitAttr(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) return std::nullopt;
  return std::make_pair(text.substr(0, eq), text.substr(eq + 1));
}

int Start(const Globals& globals, const std::optional<std::string>& uuid_text,
          const std::optional<std::string>& parent, const std::optional<std::string>& type,
          const std::vector<std::string>& attrs) {
  if (!parent.has_value() || !type.has_value()) {
    return Report("A parent and a type are required to start a device that is not defined");
  }
  std::vector<std::pair<std::string, std::string>> settings;
  for (const std::string& attr : attrs) {
    auto setting = SplitAttr(attr);
    if (!setting.has_value()) return Report(fmt::format("Bad attribute '{}': use name=value", attr));
    settings.push_back(std::move(*setting));
  }
  umdev::Uuid uuid = umdev::Uuid::Generate();
  if (uuid_text.has_value()) {
    auto parsed = umdev::Uuid::Parse(*uuid_text);
    if (!parsed.has_value()) return Report(parsed.error());
    uuid = *parsed;
  }
  auto types = Call(globals, {{"cmd", "types"}});
  if (!types.has_value()) return Report(types.error());
  auto list = Call(globals, {{"cmd", "list"}});
  if (!list.has_value()) return Report(list.error());
  if (auto problem = CheckStart((*types)["parents"], (*list)["mdevs"], uuid.ToString(), *parent,
                                *type)) {
    return Report(*problem);
  }
  auto started = Call(globals, {{"cmd", "start"}, {"parent", *parent}, {"type", *type},
                                {"uuid", uuid.ToString()}});
  if (!started.has_value()) {
    return Report(fmt::format("Failed to create mdev {}, type {} on {}: {}", uuid.ToString(),
                              *type, *parent, started.error().Describe()));
  }
  // As mdevctl does with a defined device's attributes: written in order
  // after creation, and the device is removed again if one is refused.
  for (const auto& [name, value] : settings) {
    auto set = Call(globals, {{"cmd", "attr-set"}, {"uuid", uuid.ToString()}, {"name", name},
                              {"value", value}});
    if (!set.has_value()) {
      (void)Call(globals, {{"cmd", "stop"}, {"uuid", uuid.ToString()}});
      return Report(fmt::format("Failed to set attribute {} of mdev {}: {}", name,
                                uuid.ToString(), set.error().Describe()));
    }
  }
  // mdevctl prints the UUID only when it generated it; umdevctl always does,
  // so scripts can capture it either way.
  return Print(uuid.ToString() + "\n");
}

// Lists "name=value" lines, prints one value, or sets one.
int Attr(const Globals& globals, const std::string& uuid_text, const std::optional<std::string>& name,
         const std::optional<std::string>& value) {
  auto uuid = umdev::Uuid::Parse(uuid_text);
  if (!uuid.has_value()) return Report(uuid.error());
  const std::string id = uuid->ToString();
  if (name.has_value() && value.has_value()) {
    auto set = Call(globals, {{"cmd", "attr-set"}, {"uuid", id}, {"name", *name}, {"value", *value}});
    return set.has_value() ? 0 : Report(set.error());
  }
  if (name.has_value()) {
    auto got = Call(globals, {{"cmd", "attr-get"}, {"uuid", id}, {"name", *name}});
    if (!got.has_value()) return Report(got.error());
    return Print((*got)["value"].get<std::string>() + "\n");
  }
  auto list = Call(globals, {{"cmd", "attr-list"}, {"uuid", id}});
  if (!list.has_value()) return Report(list.error());
  std::string text;
  for (const Json& attribute : (*list)["attributes"]) {
    const auto attr_name = attribute["name"].get<std::string>();
    if (!attribute["readable"].get<bool>()) {
      text += attr_name + " (write-only)\n";
      continue;
    }
    auto got = Call(globals, {{"cmd", "attr-get"}, {"uuid", id}, {"name", attr_name}});
    if (!got.has_value()) return Report(got.error());
    text += attr_name + "=" + (*got)["value"].get<std::string>() + "\n";
  }
  return Print(text);
}

int Stop(const Globals& globals, const std::string& uuid_text) {
  auto uuid = umdev::Uuid::Parse(uuid_text);
  if (!uuid.has_value()) return Report(uuid.error());
  auto stopped = Call(globals, {{"cmd", "stop"}, {"uuid", uuid->ToString()}});
  if (!stopped.has_value()) {
    return Report(fmt::format("Error removing device {}: {}", uuid->ToString(),
                              stopped.error().Describe()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"umdevctl: manage umdev mediated devices (mdevctl-compatible)"};
  app.require_subcommand(1);
  Globals globals;
  const char* env_dir = std::getenv("UMDEV_STATE_DIR");
  globals.state_dir = env_dir != nullptr ? env_dir : "/run/umdev";
  app.add_option("--state-dir", globals.state_dir, "umdevd's state directory (or UMDEV_STATE_DIR)")
      ->capture_default_str();

  std::optional<std::string> uuid, parent, type;
  bool dumpjson = false;
  int status = 0;

  auto* types = app.add_subcommand("types", "List mdev types");
  types->add_option("-p,--parent", parent, "Parent device");
  types->add_flag("--dumpjson", dumpjson, "JSON output");
  types->callback([&] { status = Types(globals, parent, dumpjson); });

  auto* list = app.add_subcommand("list", "List active mdevs");
  bool verbose = false;
  list->add_option("-u,--uuid", uuid, "UUID");
  list->add_option("-p,--parent", parent, "Parent device");
  list->add_flag("--dumpjson", dumpjson, "JSON output");
  list->add_flag("-v,--verbose", verbose, "Show attributes");
  list->callback([&] { status = List(globals, uuid, parent, dumpjson); });

  auto* start = app.add_subcommand("start", "Start an mdev");
  start->add_option("-u,--uuid", uuid, "UUID (generated and printed if omitted)");
  start->add_option("-p,--parent", parent, "Parent device");
  start->add_option("-t,--type", type, "mdev type");
  std::vector<std::string> attrs;
  start->add_option("--attr", attrs, "Set a device attribute after creation (name=value)");
  start->callback([&] { status = Start(globals, uuid, parent, type, attrs); });

  auto* attr = app.add_subcommand("attr", "List, read or set a device's attributes");
  std::string attr_uuid;
  std::optional<std::string> attr_name, attr_value;
  attr->add_option("-u,--uuid", attr_uuid, "UUID")->required();
  attr->add_option("-n,--name", attr_name, "Attribute (default: list all)");
  attr->add_option("-v,--value", attr_value, "New value (needs --name)")->needs("--name");
  attr->callback([&] { status = Attr(globals, attr_uuid, attr_name, attr_value); });

  auto* stop = app.add_subcommand("stop", "Stop an mdev");
  std::string stop_uuid;
  stop->add_option("-u,--uuid", stop_uuid, "UUID")->required();
  stop->callback([&] { status = Stop(globals, stop_uuid); });

  CLI11_PARSE(app, argc, argv);
  return status;
}
