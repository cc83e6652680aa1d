// HandleRequest: the control protocol's commands against the Registry.
#include <fmt/format.h>

#include <algorithm>

#include "umdev/control/definition_store.h"
#include "umdev/control/protocol.h"
#include "umdev/control/server.h"
#include "umdev/control/start.h"
#include "stats_command.h"
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
    Json entry = {{"uuid", mdev.uuid.ToString()},
                  {"parent", mdev.parent},
                  {"type", mdev.type_id},
                  {"iommu_group", mdev.iommu_group},
                  {"open", mdev.open},
                  {"broken", mdev.broken}};
    if (mdev.vm.has_value()) {
      entry["vm"] = {{"uuid", mdev.vm->uuid},   {"name", mdev.vm->name},
                     {"pid", mdev.vm->pid},     {"accel", mdev.vm->accel},
                     {"cgroup", mdev.vm->cgroup}};
    }
    mdevs.push_back(std::move(entry));
  }
  return {{"ok", true}, {"mdevs", std::move(mdevs)}};
}

// A failed attribute makes a reply of its own: the client needs its name,
// value and whether it exists to word mdevctl's message.
Json Start(Registry& registry, const Json& request) {
  auto parent = StringField(request, "parent");
  if (!parent.has_value()) return ErrorReply(parent.error());
  auto type = StringField(request, "type");
  if (!type.has_value()) return ErrorReply(type.error());
  auto uuid = UuidField(request);
  if (!uuid.has_value()) return ErrorReply(uuid.error());
  auto attrs = ParseAttributes(request.contains("attrs") ? request["attrs"] : Json());
  if (!attrs.has_value()) return ErrorReply(attrs.error());
  std::optional<AttributeFailure> failure;
  auto started = StartMdev(registry, *parent, *type, *uuid, *attrs, &failure);
  if (started.has_value()) return Json{{"ok", true}, {"uuid", uuid->ToString()}};
  Json reply = ErrorReply(started.error());
  if (failure.has_value()) {
    reply["attr"] = {{"name", failure->name}, {"value", failure->value}, {"exists", failure->exists}};
  }
  return reply;
}

Result<DefinitionStore*> StoreOf(DefinitionStore* store) {
  if (store == nullptr) return Fail(EOPNOTSUPP, "this umdevd keeps no definitions");
  return store;
}

Result<Json> Defined(DefinitionStore* maybe_store) {
  UMDEV_ASSIGN_OR_RETURN(DefinitionStore* store, StoreOf(maybe_store));
  Json list = Json::array();
  for (const StoredDefinition& stored : store->List()) {
    Json entry = DefinitionToJson(stored.definition);
    entry["parent"] = stored.parent;
    entry["uuid"] = stored.uuid.ToString();
    list.push_back(std::move(entry));
  }
  return Json{{"ok", true}, {"definitions", std::move(list)}};
}

Result<Json> Define(DefinitionStore* maybe_store, const Json& request) {
  UMDEV_ASSIGN_OR_RETURN(DefinitionStore* store, StoreOf(maybe_store));
  UMDEV_ASSIGN_OR_RETURN(const std::string parent, StringField(request, "parent"));
  UMDEV_ASSIGN_OR_RETURN(const Uuid uuid, UuidField(request));
  auto config = request.find("config");
  if (config == request.end()) return Fail(EINVAL, "request needs a \"config\" object");
  UMDEV_ASSIGN_OR_RETURN(const Definition definition, ParseDefinition(*config));
  const auto mode = request.value("replace", false) ? DefinitionStore::Mode::kCreateOrReplace
                                                    : DefinitionStore::Mode::kCreate;
  UMDEV_TRY(store->Write(parent, uuid, definition, mode));
  return Json{{"ok", true}};
}

Result<Json> Undefine(DefinitionStore* maybe_store, const Json& request) {
  UMDEV_ASSIGN_OR_RETURN(DefinitionStore* store, StoreOf(maybe_store));
  UMDEV_ASSIGN_OR_RETURN(const std::string parent, StringField(request, "parent"));
  UMDEV_ASSIGN_OR_RETURN(const Uuid uuid, UuidField(request));
  UMDEV_TRY(store->Remove(parent, uuid));
  return Json{{"ok", true}};
}

Result<Json> Stop(Registry& registry, const Json& request) {
  UMDEV_ASSIGN_OR_RETURN(const Uuid uuid, UuidField(request));
  UMDEV_TRY(registry.RemoveMdev(uuid));
  return Json{{"ok", true}};
}

Result<Json> ParentAttrs(Registry& registry, const Json& request) {
  UMDEV_ASSIGN_OR_RETURN(const std::string parent, StringField(request, "parent"));
  const auto parents = registry.Parents();
  const auto found = std::find_if(parents.begin(), parents.end(),
                                  [&](const ParentStatus& p) { return p.name == parent; });
  if (found == parents.end()) return Fail(ENODEV, fmt::format("no parent '{}'", parent));
  Json attributes = Json::object();
  for (const std::string& name : found->attributes) {
    UMDEV_ASSIGN_OR_RETURN(std::string value, registry.ReadParentAttribute(parent, name));
    attributes[name] = std::move(value);
  }
  return Json{{"ok", true}, {"attributes", std::move(attributes)}};
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

// A bus driver's devices (passthrough), as Registry::BusDevices has them.
Json Devices(Registry& registry) {
  Json list = Json::array();
  for (const BusDeviceStatus& device : registry.BusDevices()) {
    Json entry = {{"name", device.name},
                  {"driver", device.driver},
                  {"iommu_group", device.iommu_group},
                  {"open", device.open}};
    if (!device.needs_reset.empty()) entry["needs_reset"] = device.needs_reset;
    if (device.vm.has_value()) {
      entry["vm"] = {{"uuid", device.vm->uuid},   {"name", device.vm->name},
                     {"pid", device.vm->pid},     {"accel", device.vm->accel},
                     {"cgroup", device.vm->cgroup}};
    }
    list.push_back(std::move(entry));
  }
  return Json{{"ok", true}, {"devices", std::move(list)}};
}

Result<Json> Dispatch(Registry& registry, DefinitionStore* store, const Json& request,
                      const sysfs::Tree* tree) {
  if (!request.is_object()) return Fail(EINVAL, "request is not a JSON object");
  UMDEV_ASSIGN_OR_RETURN(const std::string cmd, StringField(request, "cmd"));
  if (cmd == "types") return Types(registry);
  if (cmd == "list") return List(registry);
  if (cmd == "stats") return Stats(registry);
  if (cmd == "devices") return Devices(registry);
  if (cmd == "start") return Start(registry, request);
  if (cmd == "defined") return Defined(store);
  if (cmd == "define") return Define(store, request);
  if (cmd == "undefine") return Undefine(store, request);
  if (cmd == "stop") return Stop(registry, request);
  if (cmd == "attr-list") return AttrList(registry, request);
  if (cmd == "parent-attrs") return ParentAttrs(registry, request);
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
  return HandleRequest(registry, nullptr, request, tree);
}

Json HandleRequest(Registry& registry, DefinitionStore* store, const Json& request,
                   const sysfs::Tree* tree) {
  Result<Json> reply = Dispatch(registry, store, request, tree);
  return reply.has_value() ? std::move(*reply) : ErrorReply(reply.error());
}

}  // namespace umdev::control
