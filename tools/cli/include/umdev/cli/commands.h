// mdevctl's commands (v1.3) over umdevd's control protocol: the same checks,
// in the same order, with the same messages and exit codes, so scripts
// written for mdevctl run unchanged against umdevctl.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/uuid.h"

namespace umdev::cli {

// What a command prints and its exit status: 0 success, 1 an error
// ("Error: <message>" on stderr, then "\n\nCaused by:\n    <cause>" when an
// OS error lies beneath, as anyhow prints them).
struct Outcome {
  int status = 0;
  std::string out;
  std::string err;
};

// Sends one control request and returns the whole reply ("ok" true or
// false). Errors: the daemon cannot be reached.
using Transport = std::function<Result<nlohmann::json>(const nlohmann::json&)>;

struct ListOptions {
  bool defined = false;
  bool dumpjson = false;
  bool verbose = false;
  std::optional<Uuid> uuid;
  std::optional<std::string> parent;
};

struct DefineOptions {
  std::optional<Uuid> uuid;
  bool autostart = false;
  std::optional<std::string> parent;
  std::optional<std::string> type;
  std::optional<std::string> jsonfile;
};

struct ModifyOptions {
  Uuid uuid;
  std::optional<std::string> parent;
  std::optional<std::string> type;
  std::optional<std::string> addattr;
  std::optional<std::string> value;
  bool delattr = false;
  std::optional<unsigned> index;
  bool autostart = false;
  bool manual = false;
  bool live = false;
  bool defined = false;
  std::optional<std::string> jsonfile;
};

struct StartOptions {
  std::optional<Uuid> uuid;
  std::optional<std::string> parent;
  std::optional<std::string> type;
  std::optional<std::string> jsonfile;
  // umdev's extension: attributes (name, value) written after the definition's.
  std::vector<std::pair<std::string, std::string>> extra_attrs;
};

struct QemuArgsOptions {
  Uuid uuid;
  std::string state_dir;
  // Where QEMU finds the sockets, when not STATE_DIR/vfio-user (QEMU in a
  // container or chroot).
  std::optional<std::string> socket_dir;
  std::string memory = "4G";  // Size of the shared memfd guest RAM.
  bool with_memory = true;
};

struct LibvirtXmlOptions {
  std::vector<Uuid> uuids;
  std::string state_dir;
  std::optional<std::string> socket_dir;  // As in QemuArgsOptions.
  // Set: a whole domain of this name (definable as is); unset: the fragments
  // to add to an existing domain.
  std::optional<std::string> domain;
  std::string memory = "4G";  // The whole domain's RAM.
  unsigned vcpus = 1;
  std::string virt_type = "kvm";  // <domain type=...>: kvm, or qemu (TCG).
};

Outcome Types(const Transport& call, const std::optional<std::string>& parent, bool dumpjson);
Outcome List(const Transport& call, const ListOptions& options);
Outcome Define(const Transport& call, const DefineOptions& options);
Outcome Undefine(const Transport& call, const Uuid& uuid, const std::optional<std::string>& parent);
Outcome Modify(const Transport& call, const ModifyOptions& options);
Outcome Start(const Transport& call, const StartOptions& options);
Outcome Stop(const Transport& call, const Uuid& uuid);
// umdev's own: the QEMU options that attach a running device.
Outcome QemuArgs(const Transport& call, const QemuArgsOptions& options);
// umdev's own: what a libvirt domain needs to attach running devices
// (docs/libvirt.md).
Outcome LibvirtXml(const Transport& call, const LibvirtXmlOptions& options);
// A size as QEMU's -m takes it: bytes, or a K/M/G/T (binary) suffix.
// Errors: EINVAL not a size, ERANGE over 64 bits.
Result<uint64_t> ParseMemorySize(std::string_view text);

// Parses a UUID in any form mdevctl (the uuid crate) accepts: hyphenated,
// simple (32 digits), braced or urn:uuid:. Errors: EINVAL with the crate's
// wording ("invalid character: ...", "invalid length: ...").
Result<Uuid> ParseUuidArgument(std::string_view text);

}  // namespace umdev::cli
