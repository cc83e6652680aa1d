// umdevctl's read-only commands (types, list), stop, qemu-args and UUID parsing.
#include "umdev/cli/commands.h"

#include <fmt/format.h>

#include <map>

#include "command_support.h"
#include "umdev/cli/mdevctl_format.h"

namespace umdev::cli {

using namespace detail;

Outcome Types(const Transport& call, const std::optional<std::string>& parent, bool dumpjson) {
  auto reply = Ask(call, {{"cmd", "types"}});
  if (!reply.has_value()) return Report(reply.error());
  const Json& parents = (*reply)["parents"];
  // mdevctl 1.4 prints its output as is: text ends in a newline, JSON in none.
  return Outcome{0, dumpjson ? FormatTypesJson(parents, parent) : FormatTypesText(parents, parent),
                 ""};
}

Outcome List(const Transport& call, const ListOptions& options) {
  auto active = ActiveDevices(call);
  if (!active.has_value()) return Report(active.error());
  auto defined = Definitions(call);
  if (!defined.has_value()) return Report(defined.error());
  const std::optional<std::string> uuid =
      options.uuid.has_value() ? std::optional(options.uuid->ToString()) : std::nullopt;
  auto wanted = [&](const std::string& u, const std::string& p) {
    return (!uuid.has_value() || *uuid == u) && (!options.parent.has_value() || *options.parent == p);
  };
  std::vector<DeviceRow> rows;
  if (options.defined) {
    for (const Defined& d : *defined) {
      if (!wanted(d.uuid, d.parent)) continue;
      DeviceRow row{d.uuid, d.parent, d.definition.mdev_type, d.definition.autostart, false, true,
                    d.definition.attrs, ""};
      // Active only when the running device matches parent and type.
      for (const ActiveDevice& a : *active) {
        if (a.uuid == d.uuid && a.parent == d.parent && a.type == row.type) {
          row.active = true;
          row.vm = a.vm;
        }
      }
      rows.push_back(std::move(row));
    }
  } else {
    for (const ActiveDevice& a : *active) {
      if (!wanted(a.uuid, a.parent)) continue;
      DeviceRow row{a.uuid, a.parent, a.type, false, true, false, {}, a.vm};
      // Start mode from the definition under the same parent; attributes of
      // a running device come only from call-out scripts, which umdev has not.
      for (const Defined& d : *defined) {
        if (d.uuid == a.uuid && d.parent == a.parent) {
          row.defined = true;
          row.autostart = d.definition.autostart;
        }
      }
      rows.push_back(std::move(row));
    }
  }
  if (options.dumpjson) {
    return Outcome{0, FormatListJson(std::move(rows), uuid.has_value()), ""};
  }
  const Listing listing = options.defined ? Listing::kDefined : Listing::kActive;
  return Outcome{0, FormatListText(std::move(rows), listing, options.verbose), ""};
}

Outcome Stop(const Transport& call, const Uuid& uuid) {
  const std::string id = uuid.ToString();
  auto active = ActiveDevices(call);
  if (!active.has_value()) return Report(active.error());
  const bool running = std::any_of(active->begin(), active->end(),
                                   [&](const ActiveDevice& a) { return a.uuid == id; });
  // mdevctl 1.4 checks that the device is active before it writes "1" to
  // its remove file.
  if (!running) return Report(Failure{fmt::format("Device {} is not an active mdev", id), ""});
  auto reply = call({{"cmd", "stop"}, {"uuid", id}});
  if (!reply.has_value()) return Report(Failure{reply.error().Describe(), ""});
  if (reply->value("ok", false) != true) {
    return Report(WithOsError("Error removing device " + id, reply->value("errno", EIO)));
  }
  return Outcome{};
}

namespace {

std::string ShellQuote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

Outcome QemuArgs(const Transport& call, const QemuArgsOptions& options) {
  auto active = ActiveDevices(call);
  if (!active.has_value()) return Report(active.error());
  auto attachment =
      AttachmentOf(call, *active, options.uuid, SocketDirFor(options.state_dir, options.socket_dir));
  if (!attachment.has_value()) return Report(attachment.error());
  std::string out;
  // A device bound to a VM opens only for the QEMU whose -uuid matches.
  if (!attachment->bound_vm_uuid.empty()) {
    out += fmt::format("-uuid {} \\\n", attachment->bound_vm_uuid);
  }
  if (options.with_memory) {
    // vfio-user reaches guest RAM through the memfd QEMU passes with each
    // DMA_MAP; RAM that is not share=on works, but every access is a message.
    out += fmt::format(
        "-object memory-backend-memfd,id=mem,size={},share=on -machine memory-backend=mem \\\n",
        options.memory);
  }
  // nlohmann orders keys; QEMU's JSON -device syntax does not care.
  out += "-device " + ShellQuote(attachment->DeviceJson(false)) + "\n";
  return Outcome{0, out, ""};
}

Result<Uuid> ParseUuidArgument(std::string_view text) {
  std::string_view body = text;
  if (body.starts_with("urn:uuid:")) body.remove_prefix(9);
  if (body.size() >= 2 && body.front() == '{' && body.back() == '}') body = body.substr(1, body.size() - 2);
  for (size_t i = 0; i < body.size(); ++i) {
    if (!std::isxdigit(static_cast<unsigned char>(body[i])) && body[i] != '-') {
      const size_t at = static_cast<size_t>(body.data() - text.data()) + i + 1;
      return Fail(EINVAL, fmt::format("invalid character: expected an optional prefix of "
                                      "`urn:uuid:` followed by [0-9a-fA-F-], found `{}` at {}",
                                      body[i], at));
    }
  }
  std::string hyphenated(body);
  if (body.find('-') == std::string_view::npos) {
    if (body.size() != 32) {
      return Fail(EINVAL, fmt::format("invalid length: expected length 32 for simple format, found {}",
                                      body.size()));
    }
    hyphenated = fmt::format("{}-{}-{}-{}-{}", body.substr(0, 8), body.substr(8, 4),
                             body.substr(12, 4), body.substr(16, 4), body.substr(20));
  } else {
    static constexpr size_t kGroups[] = {8, 4, 4, 4, 12};
    size_t group = 0, start = 0;
    for (size_t i = 0; i <= hyphenated.size(); ++i) {
      if (i != hyphenated.size() && hyphenated[i] != '-') continue;
      if (group < 5 && i - start != kGroups[group]) {
        return Fail(EINVAL, fmt::format("invalid group length in group {}: expected {}, found {}",
                                        group, kGroups[group], i - start));
      }
      ++group;
      start = i + 1;
    }
    if (group != 5) return Fail(EINVAL, fmt::format("invalid group count: expected 5, found {}", group));
  }
  return Uuid::Parse(hyphenated);
}

}  // namespace umdev::cli
