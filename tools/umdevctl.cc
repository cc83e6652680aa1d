// umdevctl: mdevctl's command surface over umdevd's control socket; run as
// "lsmdev" (a symlink) it is mdevctl's lsmdev.
// GCC 12 reports a false null dereference inside CLI11's string splitting
// once a vector option is instantiated (libstdc++ relocation, inlined).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "umdev/cli/cdi.h"
#include "umdev/cli/clap_errors.h"
#include "umdev/cli/commands.h"
#include "umdev/cli/passthrough.h"
#include "umdev/cli/top.h"
#include "umdev/control/client.h"
#include "umdev/control/protocol.h"

namespace {

using Json = nlohmann::json;
using umdev::Result;
using umdev::Uuid;
namespace cli = umdev::cli;

// clap's usage errors: "error: ..." on stderr and exit status 2.
constexpr int kUsageError = 2;

int UsageError(const std::string& message) {
  std::fprintf(stderr, "error: %s\n\nFor more information, try '--help'.\n", message.c_str());
  return kUsageError;
}

int Emit(const cli::Outcome& outcome) {
  std::fputs(outcome.out.c_str(), stdout);
  std::fputs(outcome.err.c_str(), stderr);
  return outcome.status;
}

// One connection for the whole command, opened on first use.
class Connection {
 public:
  explicit Connection(std::string socket_path) : socket_path_(std::move(socket_path)) {}
  Result<Json> operator()(const Json& request) {
    if (!client_.has_value()) {
      auto client = umdev::control::ControlClient::Connect(socket_path_);
      if (!client.has_value()) return std::unexpected(client.error());
      client_.emplace(std::move(*client));
    }
    return client_->Exchange(request);
  }

 private:
  std::string socket_path_;
  std::optional<umdev::control::ControlClient> client_;
};

// A --uuid value, checked as clap checks it.
std::optional<Uuid> UuidOption(const std::optional<std::string>& text, int& status) {
  if (!text.has_value() || status != 0) return std::nullopt;
  auto parsed = cli::ParseUuidArgument(*text);
  if (!parsed.has_value()) {
    status = UsageError(fmt::format("invalid value '{}' for '--uuid <UUID>': {}", *text,
                                    parsed.error().context));
    return std::nullopt;
  }
  return *parsed;
}

// umdev's own `attr -p`: a parent's read-only attributes, all or one.
int ParentAttr(const cli::Transport& call, const std::string& parent,
               const std::optional<std::string>& name) {
  auto reply = call({{"cmd", "parent-attrs"}, {"parent", parent}});
  if (reply.has_value() && reply->value("ok", false) != true) {
    reply = std::unexpected(umdev::control::ErrorFromReply(*reply));
  }
  if (!reply.has_value()) {
    std::fprintf(stderr, "Error: %s\n", reply.error().Describe().c_str());
    return 1;
  }
  std::string text;
  for (const auto& [key, value] : (*reply)["attributes"].items()) {
    if (name.has_value() && key != *name) continue;
    text += name.has_value() ? value.get<std::string>() + "\n"
                             : key + "=" + value.get<std::string>() + "\n";
  }
  if (name.has_value() && text.empty()) {
    std::fprintf(stderr, "Error: parent %s has no attribute %s\n", parent.c_str(), name->c_str());
    return 1;
  }
  std::fputs(text.c_str(), stdout);
  return 0;
}

std::optional<std::pair<std::string, std::string>> SplitAttr(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) return std::nullopt;
  return std::make_pair(text.substr(0, eq), text.substr(eq + 1));
}

// umdev's own `attr`: list, read or set a running device's attributes.
int Attr(const cli::Transport& call, const Uuid& uuid, const std::optional<std::string>& name,
         const std::optional<std::string>& value) {
  const std::string id = uuid.ToString();
  auto ask = [&](const Json& request) -> Result<Json> {
    UMDEV_ASSIGN_OR_RETURN(Json reply, call(request));
    if (reply.value("ok", false) != true) return std::unexpected(umdev::control::ErrorFromReply(reply));
    return reply;
  };
  auto fail = [](const umdev::Error& error) {
    std::fprintf(stderr, "Error: %s\n", error.Describe().c_str());
    return 1;
  };
  if (name.has_value() && value.has_value()) {
    auto set = ask({{"cmd", "attr-set"}, {"uuid", id}, {"name", *name}, {"value", *value}});
    return set.has_value() ? 0 : fail(set.error());
  }
  if (name.has_value()) {
    auto got = ask({{"cmd", "attr-get"}, {"uuid", id}, {"name", *name}});
    if (!got.has_value()) return fail(got.error());
    std::printf("%s\n", (*got)["value"].get<std::string>().c_str());
    return 0;
  }
  auto list = ask({{"cmd", "attr-list"}, {"uuid", id}});
  if (!list.has_value()) return fail(list.error());
  std::string text;
  for (const Json& attribute : (*list)["attributes"]) {
    const auto attr_name = attribute["name"].get<std::string>();
    if (!attribute["readable"].get<bool>()) {
      text += attr_name + " (write-only)\n";
      continue;
    }
    auto got = ask({{"cmd", "attr-get"}, {"uuid", id}, {"name", attr_name}});
    if (!got.has_value()) return fail(got.error());
    text += attr_name + "=" + (*got)["value"].get<std::string>() + "\n";
  }
  std::fputs(text.c_str(), stdout);
  return 0;
}

struct ListArgs {
  bool defined = false, dumpjson = false, verbose = false;
  std::optional<std::string> uuid, parent;
};

void AddListOptions(CLI::App& app, ListArgs& args) {
  app.add_flag("-d,--defined", args.defined, "Show defined devices");
  app.add_flag("--dumpjson", args.dumpjson, "Output device list in json format");
  app.add_flag("-v,--verbose", args.verbose, "Print additional information about the devices");
  app.add_option("-u,--uuid", args.uuid, "List devices matching the specified UUID");
  app.add_option("-p,--parent", args.parent, "List devices associated with the specified Parent device");
}

int RunList(const cli::Transport& call, const ListArgs& args) {
  int status = 0;
  cli::ListOptions options{args.defined, args.dumpjson, args.verbose, UuidOption(args.uuid, status),
                           args.parent};
  return status != 0 ? status : Emit(cli::List(call, options));
}

std::string DefaultStateDir() {
  const char* env_dir = std::getenv("UMDEV_STATE_DIR");
  return env_dir != nullptr ? env_dir : "/run/umdev";
}

// The first command-line word that is not --state-dir or its value, or
// argc when there is none.
int FirstWord(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view word = argv[i];
    if (word == "--state-dir") {
      ++i;
      continue;
    }
    if (!word.starts_with("--state-dir=")) return i;
  }
  return argc;
}

// The long names of the options given to |sub| (its word at argv[first]),
// in command-line order, each once: what clap's usage lines are made of.
std::vector<std::string> UsedArguments(CLI::App& sub, int first, int argc, char** argv) {
  std::vector<std::string> used;
  auto note = [&](const CLI::Option* option) {
    if (option == nullptr || option->get_lnames().empty()) return;
    const std::string& name = option->get_lnames().front();
    if (std::find(used.begin(), used.end(), name) == used.end()) used.push_back(name);
  };
  for (int i = first + 1; i < argc; ++i) {
    const std::string_view word = argv[i];
    if (word.starts_with("--")) {
      const size_t eq = word.find('=');
      const CLI::Option* option = sub.get_option_no_throw(std::string(word.substr(0, eq)));
      note(option);
      if (option != nullptr && option->get_expected_min() > 0 && eq == std::string_view::npos) ++i;
    } else if (word.starts_with("-") && word.size() > 1) {
      // Short flags may be bundled ("-ad"); a value option takes the rest.
      for (size_t c = 1; c < word.size(); ++c) {
        const CLI::Option* option = sub.get_option_no_throw(std::string("-") + word[c]);
        note(option);
        if (option != nullptr && option->get_expected_min() > 0) {
          if (c + 1 == word.size()) ++i;
          break;
        }
      }
    }
  }
  return used;
}

// CLI11's parse errors in clap's words.
int ParseFailure(CLI::App& app, const CLI::ParseError& error, const char* program, int argc,
                 char** argv) {
  const std::string what = error.what();
  const int first = FirstWord(argc, argv);
  if (dynamic_cast<const CLI::RequiredError*>(&error) != nullptr &&
      what.find("subcommand") != std::string::npos) {
    if (first == argc) {  // No command at all: clap prints the help, as a usage error.
      std::fputs(app.help().c_str(), stderr);
      return cli::kClapUsageStatus;
    }
    const std::string word = argv[first];
    const std::string message = word.starts_with("-")
                                    ? fmt::format("unexpected argument '{}' found", word)
                                    : fmt::format("unrecognized subcommand '{}'", word);
    std::fputs(cli::ClapErrorText(message, fmt::format("{} {}", program, cli::BaseUsage("")))
                   .c_str(),
               stderr);
    return cli::kClapUsageStatus;
  }
  const std::string subcommand =
      app.get_subcommands().empty() ? "" : app.get_subcommands().front()->get_name();
  if (dynamic_cast<const CLI::ExtrasError*>(&error) != nullptr) {
    // "The following argument(s) was/were not expected: X ..."
    const size_t colon = what.find(": ");
    std::string word = colon == std::string::npos ? what : what.substr(colon + 2);
    word = word.substr(0, word.find(' '));
    const std::string usage = subcommand.empty() && std::string_view(program) == "lsmdev"
                                  ? "lsmdev [OPTIONS]"
                                  : fmt::format("{} {}", program, cli::BaseUsage(subcommand));
    std::fputs(cli::ClapErrorText(fmt::format("unexpected argument '{}' found", word), usage).c_str(),
               stderr);
    return cli::kClapUsageStatus;
  }
  if (dynamic_cast<const CLI::ArgumentMismatch*>(&error) != nullptr) {
    // "--uuid: 1 required TEXT missing"
    const std::string option = what.substr(0, what.find(':'));
    if (option.starts_with("--")) {
      std::fputs(cli::ClapErrorText(fmt::format("a value is required for '{}' but none was supplied",
                                                cli::RenderArgument(option.substr(2))),
                                    "")
                     .c_str(),
                 stderr);
      return cli::kClapUsageStatus;
    }
  }
  return UsageError(what);
}

int Parse(CLI::App& app, const char* program, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return ParseFailure(app, e, program, argc, argv);
  }
  return -1;
}

// mdevctl's own argument rules for the parsed subcommand (see clap_errors.h).
int CheckClapRules(CLI::App& app, int argc, char** argv) {
  if (app.get_subcommands().empty()) return -1;
  CLI::App& sub = *app.get_subcommands().front();
  const std::vector<std::string> used = UsedArguments(sub, FirstWord(argc, argv), argc, argv);
  const auto failure = cli::CheckArguments("umdevctl", sub.get_name(), used);
  if (!failure.has_value()) return -1;
  std::fputs(failure->c_str(), stderr);
  return cli::kClapUsageStatus;
}

int Lsmdev(int argc, char** argv) {
  CLI::App app{"List mediated devices", "lsmdev"};
  std::string state_dir = DefaultStateDir();
  app.add_option("--state-dir", state_dir, "umdevd's state directory (or UMDEV_STATE_DIR)");
  ListArgs args;
  AddListOptions(app, args);
  if (int parsed = Parse(app, "lsmdev", argc, argv); parsed >= 0) return parsed;
  Connection connection(state_dir + "/control.sock");
  const cli::Transport call = [&connection](const Json& request) { return connection(request); };
  return RunList(call, args);
}

}  // namespace

int main(int argc, char** argv) {
  if (std::filesystem::path(argv[0]).filename().string().ends_with("lsmdev")) return Lsmdev(argc, argv);

  CLI::App app{"umdevctl: a mediated device management utility for umdev (mdevctl-compatible)"};
  app.require_subcommand(1);
  std::string state_dir = DefaultStateDir();
  app.add_option("--state-dir", state_dir, "umdevd's state directory (or UMDEV_STATE_DIR)")
      ->capture_default_str();

  std::optional<std::string> uuid, parent, type, jsonfile;
  bool dumpjson = false, autostart = false, force = false;

  auto* types = app.add_subcommand("types", "List available mediated device types");
  types->add_option("-p,--parent", parent, "Show supported types for the specified parent");
  types->add_flag("--dumpjson", dumpjson, "Output mdev types list in JSON format");

  auto* list = app.add_subcommand("list", "List mediated devices");
  ListArgs list_args;
  AddListOptions(*list, list_args);

  auto* define = app.add_subcommand("define", "Define a persistent mediated device");
  define->add_option("-u,--uuid", uuid, "Assign UUID to the device");
  define->add_flag("-a,--auto", autostart, "Automatically start device on parent availability");
  define->add_option("-p,--parent", parent, "Specify the parent of the device");
  define->add_option("-t,--type", type, "Specify the mdev type of the device");
  define->add_option("--jsonfile", jsonfile, "Specify device details in JSON format");
  define->add_flag("-f,--force", force, "Accepted for mdevctl compatibility (umdev runs no call-outs)");

  auto* undefine = app.add_subcommand("undefine", "Undefine a persistent mediated device");
  undefine->add_option("-u,--uuid", uuid, "UUID of the device to be undefined");
  undefine->add_option("-p,--parent", parent, "Parent of the device to be undefined");
  undefine->add_flag("-f,--force", force, "Accepted for mdevctl compatibility");

  auto* modify = app.add_subcommand("modify", "Modify the definition of a mediated device");
  cli::ModifyOptions mod;
  std::optional<std::string> addattr, value;
  std::optional<unsigned> index;
  modify->add_option("-u,--uuid", uuid, "UUID of the mdev to modify");
  modify->add_option("-p,--parent", parent, "Parent of the mdev to modify");
  modify->add_option("-t,--type", type, "Modify the mdev type for this device");
  modify->add_option("--addattr", addattr, "Add a new attribute");
  modify->add_flag("--delattr", mod.delattr, "Delete an attribute");
  modify->add_option("-i,--index", index, "Index of the attribute to modify");
  modify->add_option("--value", value, "Value for the attribute specified by --addattr");
  modify->add_flag("-a,--auto", mod.autostart, "Device will be started automatically");
  modify->add_flag("-m,--manual", mod.manual, "Device must be started manually");
  modify->add_flag("-l,--live", mod.live, "Modify the running device (attributes from --jsonfile)");
  modify->add_flag("-d,--defined", mod.defined, "Modify the stored device definition");
  modify->add_option("--jsonfile", jsonfile, "Specify device details in JSON format");
  modify->add_flag("-f,--force", force, "Accepted for mdevctl compatibility");

  auto* start = app.add_subcommand("start", "Start a mediated device");
  start->add_option("-u,--uuid", uuid, "UUID of the device to start");
  start->add_option("-p,--parent", parent, "Parent of the device to start");
  start->add_option("-t,--type", type, "Mdev type of the device to start");
  start->add_option("--jsonfile", jsonfile, "Details of the device to be started, in JSON format");
  start->add_flag("-f,--force", force, "Accepted for mdevctl compatibility");
  std::vector<std::string> attrs;
  start->add_option("--attr", attrs, "umdev: also set a device attribute after creation (name=value)");

  auto* stop = app.add_subcommand("stop", "Stop a mediated device");
  stop->add_option("-u,--uuid", uuid, "UUID of the device to stop");
  stop->add_flag("-f,--force", force, "Accepted for mdevctl compatibility");

  auto* qemu = app.add_subcommand("qemu-args", "umdev: print the QEMU options that attach a device");
  std::string qemu_uuid;
  cli::QemuArgsOptions qemu_options;
  qemu->add_option("uuid", qemu_uuid, "UUID of a running device")->required();
  qemu->add_option("-m,--memory", qemu_options.memory, "Guest RAM size for the shared memfd backend")
      ->capture_default_str();
  bool no_memory = false;
  qemu->add_flag("--no-memory", no_memory, "Leave out the memory backend (the VM already shares its RAM)");
  qemu->add_option("--socket-dir", qemu_options.socket_dir,
                   "Where QEMU finds the sockets, if not STATE_DIR/vfio-user (a container or chroot)");

  auto* libvirt = app.add_subcommand(
      "libvirt-xml", "umdev: print what a libvirt domain needs to attach running devices");
  std::vector<std::string> libvirt_uuids;
  cli::LibvirtXmlOptions libvirt_options;
  libvirt->add_option("uuid", libvirt_uuids, "UUIDs of running devices")->required();
  libvirt->add_option("--socket-dir", libvirt_options.socket_dir,
                      "Where QEMU finds the sockets, if not STATE_DIR/vfio-user (a container or chroot)");
  libvirt->add_option("--domain", libvirt_options.domain,
                      "Print a whole domain of this name instead of the fragments");
  libvirt->add_option("-m,--memory", libvirt_options.memory, "The whole domain's RAM (with --domain)")
      ->capture_default_str();
  libvirt->add_option("--vcpus", libvirt_options.vcpus, "The whole domain's vCPUs (with --domain)")
      ->check(CLI::Range(1u, 4096u))
      ->capture_default_str();
  libvirt->add_option("--virt-type", libvirt_options.virt_type,
                      "The whole domain's type: kvm, or qemu for TCG (with --domain)")
      ->check(CLI::IsMember({"kvm", "qemu"}))
      ->capture_default_str();

  auto* cdi = app.add_subcommand("cdi", "umdev: Container Device Interface specs");
  auto* cdi_generate = cdi->add_subcommand(
      "generate", "Write the CDI spec (kind umdev.io/device) for the running devices");
  cdi->require_subcommand(1);
  cli::CdiOptions cdi_options;
  cdi_generate->add_option("-o,--output", cdi_options.output, "Where to write it ('-': stdout)")
      ->capture_default_str();
  cdi_generate->add_option("--socket-dir", cdi_options.socket_dir,
                           "Where the sockets are on the host, if not STATE_DIR/vfio-user");
  cdi_generate->add_option("--container-dir", cdi_options.container_dir,
                           "Where the sockets appear in the container")
      ->capture_default_str();

  auto* attr = app.add_subcommand(
      "attr", "umdev: list, read or set a running device's attributes, or read a parent's");
  std::optional<std::string> attr_name, attr_value;
  auto* attr_uuid = attr->add_option("-u,--uuid", uuid, "UUID");
  auto* attr_parent = attr->add_option("-p,--parent", parent, "A parent device (read-only attributes)");
  attr_uuid->excludes(attr_parent);
  attr->add_option("-n,--name", attr_name, "Attribute (default: list all)");
  attr->add_option("-v,--value", attr_value, "New value (needs --name)")->needs("--name");

  auto* stats = app.add_subcommand("stats", "umdev: every device's usage, once (for scripts)");
  bool stats_json = false;
  stats->add_flag("--json", stats_json, "One JSON object");
  auto* top = app.add_subcommand("top", "umdev: a live view of every device's usage");
  cli::TopOptions top_options;
  double top_delay = 1.0;
  top->add_option("-d,--delay", top_delay, "Seconds between refreshes")
      ->check(CLI::Range(0.05, 3600.0))
      ->capture_default_str();
  top->add_option("-n,--iterations", top_options.iterations, "Refreshes before exiting (0: until q)");
  top->add_flag("-b,--batch", top_options.batch, "Append each table instead of redrawing");

  auto* passthrough = app.add_subcommand(
      "passthrough", "umdev: hand host PCI functions to vfio-pci for umdevd, and list them");
  passthrough->require_subcommand(1);
  std::vector<std::string> pt_addresses;
  std::string sysfs_root = "/sys";
  bool pt_json = false;
  auto* pt_bind = passthrough->add_subcommand(
      "bind", "Bind functions to vfio-pci (refused while their group has one on a host driver)");
  pt_bind->add_option("ADDRESS", pt_addresses, "PCI addresses (DDDD:BB:DD.F)")->required();
  auto* pt_unbind = passthrough->add_subcommand("unbind", "Give functions back to their drivers");
  pt_unbind->add_option("ADDRESS", pt_addresses, "PCI addresses")->required();
  auto* pt_list = passthrough->add_subcommand("list", "The functions umdevd serves");
  pt_list->add_flag("--json", pt_json, "JSON");
  for (CLI::App* command : {pt_bind, pt_unbind, pt_list}) {
    command->add_option("--sysfs", sysfs_root, "Where sysfs is (test rigs)")->capture_default_str();
  }

  if (int parsed = Parse(app, "umdevctl", argc, argv); parsed >= 0) return parsed;
  // clap checks a value as it parses it, before the rules between arguments.
  int status = 0;
  const std::optional<Uuid> id = UuidOption(uuid, status);
  if (status != 0) return status;
  if (int checked = CheckClapRules(app, argc, argv); checked >= 0) return checked;
  Connection connection(state_dir + "/control.sock");
  const cli::Transport call = [&connection](const Json& request) { return connection(request); };

  if (types->parsed()) return Emit(cli::Types(call, parent, dumpjson));
  if (list->parsed()) return RunList(call, list_args);
  if (define->parsed()) {
    return Emit(cli::Define(call, {id, autostart, parent, type, jsonfile}));
  }
  if (undefine->parsed()) return Emit(cli::Undefine(call, *id, parent));
  if (modify->parsed()) {
    mod.uuid = *id;
    mod.parent = parent;
    mod.type = type;
    mod.addattr = addattr;
    mod.value = value;
    mod.index = index;
    mod.jsonfile = jsonfile;
    return Emit(cli::Modify(call, mod));
  }
  if (start->parsed()) {
    cli::StartOptions options{id, parent, type, jsonfile, {}};
    for (const std::string& text : attrs) {
      auto setting = SplitAttr(text);
      if (!setting.has_value()) return UsageError(fmt::format("invalid value '{}' for '--attr': use name=value", text));
      options.extra_attrs.push_back(std::move(*setting));
    }
    return Emit(cli::Start(call, options));
  }
  if (stop->parsed()) return Emit(cli::Stop(call, *id));
  if (qemu->parsed()) {
    auto parsed_uuid = cli::ParseUuidArgument(qemu_uuid);
    if (!parsed_uuid.has_value()) {
      return UsageError(fmt::format("invalid value '{}' for '<UUID>': {}", qemu_uuid, parsed_uuid.error().context));
    }
    qemu_options.uuid = *parsed_uuid;
    qemu_options.state_dir = state_dir;
    qemu_options.with_memory = !no_memory;
    return Emit(cli::QemuArgs(call, qemu_options));
  }
  if (cdi_generate->parsed()) {
    cdi_options.state_dir = state_dir;
    return Emit(cli::CdiGenerate(call, cdi_options));
  }
  if (libvirt->parsed()) {
    for (const std::string& text : libvirt_uuids) {
      auto parsed_uuid = cli::ParseUuidArgument(text);
      if (!parsed_uuid.has_value()) {
        return UsageError(fmt::format("invalid value '{}' for '<UUID>': {}", text, parsed_uuid.error().context));
      }
      libvirt_options.uuids.push_back(*parsed_uuid);
    }
    libvirt_options.state_dir = state_dir;
    return Emit(cli::LibvirtXml(call, libvirt_options));
  }
  if (attr->parsed()) {
    if (parent.has_value()) {
      if (attr_value.has_value()) return UsageError("a parent's attributes are read-only");
      return ParentAttr(call, *parent, attr_name);
    }
    if (!id.has_value()) return UsageError("attr needs -u UUID or -p PARENT");
    return Attr(call, *id, attr_name, attr_value);
  }
  if (pt_bind->parsed()) return Emit(cli::PassthroughBind(umdev::pci::Sysfs(sysfs_root), pt_addresses));
  if (pt_unbind->parsed()) {
    return Emit(cli::PassthroughUnbind(call, umdev::pci::Sysfs(sysfs_root), pt_addresses));
  }
  if (pt_list->parsed()) return Emit(cli::PassthroughList(call, umdev::pci::Sysfs(sysfs_root), pt_json));
  if (stats->parsed()) return Emit(cli::Stats(call, stats_json));
  if (top->parsed()) {
    top_options.interval = std::chrono::milliseconds(static_cast<int64_t>(top_delay * 1000));
    return cli::Top(call, top_options);
  }
  return kUsageError;
}
