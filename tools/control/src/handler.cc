// HandleRequest: the control protocol's commands against the Registry.
#include <fmt/format.h>

#include "umdev/control/protocol.h"
#include "umdev/control/server.h"
#include "sysfs_commands.h"

namespace umdev::control {
namespace {

using Json = nlohmann::json;

Result<std::string> StringField(const Json& request, const char* name) {
  auto it = request.find(name);
  if (it == request.end() || !it->is_string()) {
    return Fail(EINVAL, fmt::format("request needs a string \"{}\"", name));
  }
  return it->get<std::string>();
}

Result<Uuid> UuidField(const Json& request) {
  UMDEV_ASSIGN_OR_RETURN(const std::string text, StringField(request, "uuid"));
  return Uuid::Parse(text);
}

Json Types(Registry& registry) {
  Json parents = Json::array();
  for (const ParentStatus& parent : registry.Parents()) {
    Json types = Json::array();
    for (const MdevTypeStatus& type : parent.types) {
      types.push_back({{"id", type.id},
                       {"name", type.name},
                       {"description", type.description},
                       {"device_api", type.device_api},
                       {"available_instances", type.available_instances}});
    }
    parents.push_back({{"name", parent.name}, {"types", std::move(types)}});
  }
  return {{"ok", true}, {"parents", std::move(parents)}};
}

Json List(Registry& registry) {
  Json mdevs = Json::array();
  for (const MdevStatus& mdev : registry.Mdevs()) {
    mdevs.push_back({{"uuid", mdev.uuid.ToString()},
                     {"parent", mdev.parent},
                     {"type", mdev.type_id},
                     {"iommu_group", mdev.iommu_group},
                     {"open", mdev.open}});
  }
  return {{"ok", true}, {"mdevs", std::move(mdevs)}};
}

Result<Json> Start(Registry& registry, const Json& request) {
  UMDEV_ASSIGN_OR_RETURN(const std::string parent, StringField(request, "parent"));
  UMDEV_ASSIGN_OR_RETURN(const std::string type, StringField(request, "type"));
  UMDEV_ASSIGN_OR_RETURN(const Uuid uuid, UuidField(request));
  UMDEV_TRY(registry.CreateMdev(parent, type, uuid));
  return Json{{"ok", true}, {"uuid", uuid.ToString()}};
}

Result<Json> Stop(Registry& registry, const Json& request) {
  UMDEV_ASSIGN_OR_RETURN(const Uuid uuid, UuidField(request));
  UMDEV_TRY(registry.RemoveMdev(uuid));
  return Json{{"ok", true}};
}

Result<Json> AttrList(Registry& registry, const Json& request) {
  UMDEV_ASSIGN_OR_RETURN(const Uuid uuid, UuidField(request));
  UMDEV_ASSIGN_OR_RETURN(const std::vector<DeviceAttribute> attributes,
                         registry.MdevAttributes(uuid));
  Json list = Json::array();
  for (const DeviceAttribute& attribute : attributes) {
    list.push_back({{"name", attribute.name},
                    {"readable", attribute.readable},
                    {"writable", attribute.writable}});
  }
  return Json{{"ok", true}, {"attributes", std::move(list)}};
}

Result<Json> AttrGet(Registry& registry, const Json& request) {
  UMDEV_ASSIGN_OR_RETURN(const Uuid uuid, UuidField(request));
  UMDEV_ASSIGN_OR_RETURN(const std::string name, StringField(request, "name"));
  UMDEV_ASSIGN_OR_RETURN(const std::string value, registry.ReadMdevAttribute(uuid, name));
  return Json{{"ok", true}, {"value", value}};
}

Result<Json> AttrSet(Registry& registry, const Json& request) {
  UMDEV_ASSIGN_OR_RETURN(const Uuid uuid, UuidField(request));
  UMDEV_ASSIGN_OR_RETURN(const std::string name, StringField(request, "name"));
  UMDEV_ASSIGN_OR_RETURN(const std::string value, StringField(request, "value"));
  UMDEV_TRY(registry.WriteMdevAttribute(uuid, name, value));
  return Json{{"ok", true}};
}

Result<Json> Dispatch(Registry& registry, const Json& request, const sysfs::Tree* tree) {
  if (!request.is_object()) return Fail(EINVAL, "request is not a JSON object");
  UMDEV_ASSIGN_OR_RETURN(const std::string cmd, StringField(request, "cmd"));
  if (cmd == "types") return Types(registry);
  if (cmd == "list") return List(registry);
  if (cmd == "start") return Start(registry, request);
  if (cmd == "stop") return Stop(registry, request);
  if (cmd == "attr-list") return AttrList(registry, request);
  if (cmd == "attr-get") return AttrGet(registry, request);
  if (cmd == "attr-set") return AttrSet(registry, request);
  if (cmd.starts_with("sysfs-")) {
    if (tree != nullptr) return SysfsCommand(*tree, cmd, request);
    return SysfsCommand(sysfs::Tree(registry), cmd, request);
  }
  return Fail(EINVAL, fmt::format("unknown command '{}'", cmd));
}

}  // namespace

Json HandleRequest(Registry& registry, const Json& request, const sysfs::Tree* tree) {
  Result<Json> reply = Dispatch(registry, request, tree);
  return reply.has_value() ? std::move(*reply) : ErrorReply(reply.error());
}

}  // namespace umdev::control
