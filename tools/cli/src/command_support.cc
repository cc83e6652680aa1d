// Shared pieces of umdevctl's commands.
#include "command_support.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "umdev/common/unique_fd.h"

namespace umdev::cli::detail {

std::string OsError(int code) { return fmt::format("{} (os error {})", std::strerror(code), code); }

Failure WithOsError(std::string message, int code) { return {std::move(message), OsError(code)}; }

Outcome Report(const Failure& failure) {
  std::string err = "Error: " + failure.message;
  if (!failure.cause.empty()) err += "\n\nCaused by:\n    " + failure.cause;
  return Outcome{1, "", err + "\n"};
}

std::string QuotedPath(const std::string& path) {
  std::string out = "\"";
  for (char c : path) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

Try<Json> Ask(const Transport& call, const Json& request) {
  auto reply = call(request);
  if (!reply.has_value()) return std::unexpected(Failure{reply.error().Describe(), ""});
  if (reply->value("ok", false) != true) {
    return std::unexpected(WithOsError(reply->value("message", std::string("umdevd refused")),
                                       reply->value("errno", EIO)));
  }
  return std::move(*reply);
}

std::string DescribeVm(const Json& mdev) {
  if (!mdev.contains("vm") || !mdev["vm"].is_object()) return {};
  const Json& vm = mdev["vm"];
  // A client that is not a VM (umdev-probe, a test rig) has no VM to show.
  if (vm.value("accel", "") == "none") return {};
  const auto text = [&](const char* key) {
    return vm.contains(key) && vm[key].is_string() ? vm[key].get<std::string>() : std::string();
  };
  const int64_t pid = vm.contains("pid") && vm["pid"].is_number_integer() ? vm["pid"].get<int64_t>() : 0;
  std::string out = text("name").empty() ? "(unnamed)" : text("name");
  out += fmt::format(" (pid {}, accel {}", pid, text("accel").empty() ? "unknown" : text("accel"));
  if (!text("uuid").empty()) out += ", uuid " + text("uuid");
  return out + ")";
}

Try<std::vector<ActiveDevice>> ActiveDevices(const Transport& call) {
  auto reply = Ask(call, {{"cmd", "list"}});
  if (!reply.has_value()) return std::unexpected(reply.error());
  std::vector<ActiveDevice> devices;
  for (const Json& mdev : (*reply)["mdevs"]) {
    devices.push_back({mdev.at("uuid").get<std::string>(), mdev.at("parent").get<std::string>(),
                       mdev.at("type").get<std::string>(), DescribeVm(mdev)});
  }
  return devices;
}

std::string Attachment::DeviceJson(bool with_id) const {
  Json device{{"driver", "vfio-user-pci"}, {"socket", {{"type", "unix"}, {"path", socket}}}};
  if (with_id) device["id"] = "umdev-" + uuid;
  return device.dump();
}

std::string SocketDirFor(const std::string& state_dir, const std::optional<std::string>& socket_dir) {
  return socket_dir.has_value() ? *socket_dir : state_dir + "/vfio-user";
}

Try<Attachment> AttachmentOf(const Transport& call, const std::vector<ActiveDevice>& active,
                             const Uuid& uuid, const std::string& socket_dir) {
  const std::string id = uuid.ToString();
  if (std::none_of(active.begin(), active.end(), [&](const ActiveDevice& a) { return a.uuid == id; })) {
    return std::unexpected(Failure{fmt::format("Mediated device {} is not active", id), ""});
  }
  std::error_code ec;
  Attachment attachment{id,
                        (std::filesystem::absolute(socket_dir, ec) / (id + ".sock"))
                            .lexically_normal()
                            .string(),
                        ""};
  auto bound = call({{"cmd", "attr-get"}, {"uuid", id}, {"name", "bound_vm_uuid"}});
  if (bound.has_value() && bound->value("ok", false) == true && (*bound)["value"].is_string()) {
    attachment.bound_vm_uuid = (*bound)["value"].get<std::string>();
  }
  return attachment;
}

Try<std::vector<Defined>> Definitions(const Transport& call) {
  auto reply = Ask(call, {{"cmd", "defined"}});
  if (!reply.has_value()) return std::unexpected(reply.error());
  std::vector<Defined> found;
  for (const Json& entry : (*reply)["definitions"]) {
    auto definition = control::ParseDefinition(entry);
    if (!definition.has_value()) continue;  // The daemon skips these already.
    found.push_back({entry.at("parent").get<std::string>(), entry.at("uuid").get<std::string>(),
                     std::move(*definition)});
  }
  return found;
}

std::vector<Defined> Matching(const std::vector<Defined>& all, const std::string& uuid,
                              const std::optional<std::string>& parent) {
  std::vector<Defined> found;
  for (const Defined& d : all) {
    if (d.uuid == uuid && (!parent.has_value() || *parent == d.parent)) found.push_back(d);
  }
  return found;
}

Try<void> CheckReadable(const std::string& path, const std::string& error) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::unexpected(WithOsError(error, errno));
  return {};
}

Try<Json> ReadJsonFile(const std::string& path, const std::string& read_error) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::unexpected(WithOsError(read_error, errno));
  std::string text;
  char chunk[4096];
  for (ssize_t n; (n = ::read(fd.get(), chunk, sizeof(chunk))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::unexpected(WithOsError(read_error, errno));
    text.append(chunk, static_cast<size_t>(n));
  }
  auto json = control::ParseJsonText(text);
  if (!json.has_value()) return std::unexpected(Failure{json.error().context, ""});
  return std::move(*json);
}

Try<control::Definition> DefinitionFrom(const Json& json) {
  auto definition = control::ParseDefinition(json);
  if (!definition.has_value()) return std::unexpected(Failure{definition.error().context, ""});
  return std::move(*definition);
}

Try<control::Definition> LoadJsonFile(const std::string& path, const std::string& read_error) {
  auto json = ReadJsonFile(path, read_error);
  if (!json.has_value()) return std::unexpected(json.error());
  return DefinitionFrom(*json);
}

Try<void> WriteDefinition(const Transport& call, const std::string& parent,
                          const std::string& uuid, const control::Definition& definition,
                          bool replace) {
  auto reply = Ask(call, {{"cmd", "define"},
                          {"parent", parent},
                          {"uuid", uuid},
                          {"config", control::DefinitionToJson(definition)},
                          {"replace", replace}});
  if (!reply.has_value()) {
    return std::unexpected(Failure{fmt::format("Failed to write config for device {}", uuid),
                                   reply.error().cause.empty() ? reply.error().message
                                                               : reply.error().cause});
  }
  return {};
}

}  // namespace umdev::cli::detail
