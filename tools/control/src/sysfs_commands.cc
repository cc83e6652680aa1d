// sysfs-*: the mounted tree's stat/readdir/read/write over the control socket.
#include "sysfs_commands.h"

#include <fmt/format.h>

namespace umdev::control {
namespace {

using Json = nlohmann::json;

Result<std::string> Field(const Json& request, const char* name) {
  auto it = request.find(name);
  if (it == request.end() || !it->is_string()) {
    return Fail(EINVAL, fmt::format("request needs a string \"{}\"", name));
  }
  return it->get<std::string>();
}

const char* KindName(sysfs::NodeKind kind) {
  switch (kind) {
    case sysfs::NodeKind::kDirectory:
      return "dir";
    case sysfs::NodeKind::kFile:
      return "file";
    case sysfs::NodeKind::kSymlink:
      return "link";
  }
  return "file";
}

Json Describe(const sysfs::NodeInfo& node) {
  Json json{{"kind", KindName(node.kind)}, {"mode", node.mode}};
  if (node.kind == sysfs::NodeKind::kSymlink) json["target"] = node.target;
  return json;
}

}  // namespace

Result<Json> SysfsCommand(const sysfs::Tree& tree, std::string_view cmd, const Json& request) {
  UMDEV_ASSIGN_OR_RETURN(const std::string path, Field(request, "path"));
  if (cmd == "sysfs-stat") {
    UMDEV_ASSIGN_OR_RETURN(const sysfs::NodeInfo node, tree.Stat(path));
    Json reply = Describe(node);
    reply["ok"] = true;
    return reply;
  }
  if (cmd == "sysfs-list") {
    UMDEV_ASSIGN_OR_RETURN(const std::vector<std::string> names, tree.List(path));
    Json entries = Json::array();
    for (const std::string& name : names) {
      auto node = tree.Stat(path + "/" + name);
      if (!node.has_value()) continue;  // Gone since the listing.
      Json entry = Describe(*node);
      entry["name"] = name;
      entries.push_back(std::move(entry));
    }
    return Json{{"ok", true}, {"entries", std::move(entries)}};
  }
  if (cmd == "sysfs-read") {
    UMDEV_ASSIGN_OR_RETURN(const std::string value, tree.Read(path));
    return Json{{"ok", true}, {"value", value}};
  }
  if (cmd == "sysfs-write") {
    UMDEV_ASSIGN_OR_RETURN(const std::string value, Field(request, "value"));
    UMDEV_TRY(tree.Write(path, value));
    return Json{{"ok", true}};
  }
  return Fail(EINVAL, fmt::format("unknown command '{}'", cmd));
}

}  // namespace umdev::control
