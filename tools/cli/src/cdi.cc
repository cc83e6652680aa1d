// umdevctl cdi generate: a CDI spec for the running devices.
#include "umdev/cli/cdi.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <set>

#include "command_support.h"
#include "umdev/common/unique_fd.h"

namespace umdev::cli {

using namespace detail;

namespace {

bool IsAlnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool IsAlpha(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }

// CDI's name rules: a first and last character from |first|/|last|, the
// rest letters, digits or one of |inner|.
bool NameFits(std::string_view name, bool (*first)(char), std::string_view inner) {
  if (name.empty() || !first(name.front()) || !IsAlnum(name.back())) return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return IsAlnum(c) || inner.find(c) != std::string_view::npos; });
}

bool IsVendorName(std::string_view name) { return NameFits(name, IsAlpha, "-_."); }
bool IsClassName(std::string_view name) { return NameFits(name, IsAlpha, "-_"); }

nlohmann::json Mount(const CdiDevice& d, const CdiLayout& layout) {
  return {{"hostPath", layout.host_socket_dir + "/" + d.uuid + ".sock"},
          {"containerPath", layout.container_socket_dir + "/" + d.uuid + ".sock"},
          {"options", {"bind"}}};
}

std::string ContainerSocket(const CdiDevice& d, const CdiLayout& layout) {
  return layout.container_socket_dir + "/" + d.uuid + ".sock";
}

Result<void> Invalid(std::string what) { return Fail(EINVAL, "CDI spec: " + what); }

}  // namespace

Result<void> WriteFileAtomically(const std::string& path, const std::string& text) {
  std::error_code ec;
  const std::filesystem::path target(path);
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path(), ec);
  const std::string temporary = path + ".tmp";
  UniqueFd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return FailErrno("open " + temporary);
  for (size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      auto error = FailErrno("write " + temporary);
      ::unlink(temporary.c_str());
      return error;
    }
    done += static_cast<size_t>(n);
  }
  if (::fchmod(fd.get(), 0644) != 0 || ::fsync(fd.get()) != 0) {
    auto error = FailErrno("sync " + temporary);
    ::unlink(temporary.c_str());
    return error;
  }
  fd.Reset();
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    auto error = FailErrno("rename to " + path);
    ::unlink(temporary.c_str());
    return error;
  }
  return {};
}

std::string CdiSocketVariable(std::string_view uuid) {
  std::string name = "UMDEV_SOCKET_";
  for (char c : uuid) name += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

bool IsCdiDeviceName(std::string_view name) { return NameFits(name, IsAlnum, "-_.:"); }

nlohmann::json CdiSpec(const std::vector<CdiDevice>& devices, const CdiLayout& layout,
                       std::vector<std::string>* skipped) {
  std::map<std::string, nlohmann::json> named;  // Ordered by name.
  std::map<std::string, std::vector<const CdiDevice*>> by_type;
  for (const CdiDevice& d : devices) {
    named[d.uuid] = {
        {"name", d.uuid},
        {"annotations", {{"umdev.io/parent", d.parent}, {"umdev.io/type", d.type}}},
        {"containerEdits",
         {{"env", {CdiSocketVariable(d.uuid) + "=" + ContainerSocket(d, layout)}},
          {"mounts", {Mount(d, layout)}}}}};
    by_type[d.parent + "." + d.type].push_back(&d);
  }
  for (const auto& [name, members] : by_type) {
    if (!IsCdiDeviceName(name) || named.contains(name)) {
      if (skipped != nullptr) skipped->push_back(name);
      continue;
    }
    nlohmann::json env = nlohmann::json::array(), mounts = nlohmann::json::array();
    std::string all;
    for (const CdiDevice* d : members) {
      env.push_back(CdiSocketVariable(d->uuid) + "=" + ContainerSocket(*d, layout));
      mounts.push_back(Mount(*d, layout));
      all += (all.empty() ? "" : ",") + ContainerSocket(*d, layout);
    }
    env.push_back("UMDEV_SOCKETS=" + all);
    named[name] = {{"name", name},
                   {"annotations",
                    {{"umdev.io/parent", members.front()->parent}, {"umdev.io/type", members.front()->type}}},
                   {"containerEdits", {{"env", env}, {"mounts", mounts}}}};
  }
  nlohmann::json list = nlohmann::json::array();
  for (auto& [name, device] : named) list.push_back(std::move(device));
  return {{"cdiVersion", kCdiVersion}, {"kind", kCdiKind}, {"devices", std::move(list)}};
}

Result<void> ValidateCdiSpec(const nlohmann::json& spec) {
  if (!spec.is_object()) return Invalid("not an object");
  const auto version = spec.find("cdiVersion");
  if (version == spec.end() || !version->is_string()) return Invalid("no cdiVersion");
  // Device annotations need 0.6.0; the spec's versions are 0.3.0 .. 0.8.0.
  static const std::set<std::string> kVersions = {"0.6.0", "0.7.0", "0.8.0"};
  if (!kVersions.contains(version->get<std::string>())) {
    return Invalid("cdiVersion " + version->get<std::string>() + " cannot carry device annotations");
  }
  const auto kind = spec.find("kind");
  if (kind == spec.end() || !kind->is_string()) return Invalid("no kind");
  const std::string kind_text = kind->get<std::string>();
  const size_t slash = kind_text.find('/');
  if (slash == std::string::npos || !IsVendorName(kind_text.substr(0, slash)) ||
      !IsClassName(kind_text.substr(slash + 1))) {
    return Invalid("kind '" + kind_text + "' is not VENDOR/CLASS");
  }
  const auto devices = spec.find("devices");
  if (devices == spec.end() || !devices->is_array() || devices->empty()) return Invalid("no devices");
  std::set<std::string> seen;
  for (const nlohmann::json& device : *devices) {
    const auto name = device.find("name");
    if (name == device.end() || !name->is_string() || !IsCdiDeviceName(name->get<std::string>())) {
      return Invalid("a device name is missing or not a CDI name");
    }
    const std::string id = name->get<std::string>();
    if (!seen.insert(id).second) return Invalid("device " + id + " is named twice");
    const auto edits = device.find("containerEdits");
    if (edits == device.end() || !edits->is_object() || edits->empty()) {
      return Invalid("device " + id + " has no edits");
    }
    static const std::set<std::string> kEdits = {"env",   "deviceNodes", "hooks",
                                                  "mounts", "intelRdt",   "additionalGids"};
    for (const auto& [key, value] : edits->items()) {
      if (!kEdits.contains(key)) return Invalid("device " + id + ": unknown edit " + key);
      if ((key == "env" || key == "mounts") && (!value.is_array() || value.empty())) {
        return Invalid("device " + id + ": empty " + key);
      }
    }
    for (const nlohmann::json& variable : edits->value("env", nlohmann::json::array())) {
      const std::string text = variable.is_string() ? variable.get<std::string>() : "";
      const size_t equals = text.find('=');
      if (equals == std::string::npos || equals == 0) {
        return Invalid("device " + id + ": env '" + text + "' is not KEY=VALUE");
      }
    }
    for (const nlohmann::json& mount : edits->value("mounts", nlohmann::json::array())) {
      for (const char* path : {"hostPath", "containerPath"}) {
        const auto at = mount.find(path);
        if (at == mount.end() || !at->is_string() || !at->get<std::string>().starts_with('/')) {
          return Invalid(fmt::format("device {}: a mount's {} is not absolute", id, path));
        }
      }
    }
  }
  return {};
}

Outcome CdiGenerate(const Transport& call, const CdiOptions& options) {
  if (!options.container_dir.starts_with('/')) {
    return Report(Failure{"Invalid --container-dir: '" + options.container_dir + "' is not absolute", ""});
  }
  auto active = ActiveDevices(call);
  if (!active.has_value()) return Report(active.error());
  std::error_code ec;
  const CdiLayout layout{
      std::filesystem::absolute(SocketDirFor(options.state_dir, options.socket_dir), ec)
          .lexically_normal()
          .string(),
      options.container_dir};
  std::vector<CdiDevice> devices;
  for (const ActiveDevice& a : *active) devices.push_back({a.uuid, a.parent, a.type});
  std::string notes;
  if (devices.empty()) {
    // CDI has no empty spec: no devices, no file.
    if (options.output != "-" && std::filesystem::remove(options.output, ec)) {
      notes = "No running devices: removed " + options.output + "\n";
    }
    return Outcome{0, "", notes};
  }
  std::vector<std::string> skipped;
  const nlohmann::json spec = CdiSpec(devices, layout, &skipped);
  for (const std::string& name : skipped) {
    notes += "No CDI device " + name + ": not a CDI device name, or a UUID's\n";
  }
  if (auto valid = ValidateCdiSpec(spec); !valid.has_value()) {
    return Report(Failure{valid.error().context, ""});
  }
  const std::string text = spec.dump(2) + "\n";
  if (options.output == "-") return Outcome{0, text, notes};
  if (auto written = WriteFileAtomically(options.output, text); !written.has_value()) {
    return Report(WithOsError("Failed to write " + options.output, written.error().code));
  }
  return Outcome{0, "", notes};
}

}  // namespace umdev::cli
