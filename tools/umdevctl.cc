// umdevctl: mdevctl's command surface over umdevd's control socket.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

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

int Start(const Globals& globals, const std::optional<std::string>& uuid_text,
          const std::optional<std::string>& parent, const std::optional<std::string>& type) {
  if (!parent.has_value() || !type.has_value()) {
    return Report("A parent and a type are required to start a device that is not defined");
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
  // mdevctl prints the UUID only when it generated it; umdevctl always does,
  // so scripts can capture it either way.
  return Print(uuid.ToString() + "\n");
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
  start->callback([&] { status = Start(globals, uuid, parent, type); });

  auto* stop = app.add_subcommand("stop", "Stop an mdev");
  std::string stop_uuid;
  stop->add_option("-u,--uuid", stop_uuid, "UUID")->required();
  stop->callback([&] { status = Stop(globals, stop_uuid); });

  CLI11_PARSE(app, argc, argv);
  return status;
}
