// Shared pieces of umdevctl's commands: failures worded as mdevctl's anyhow
// errors, and the daemon's view of devices and definitions.
#pragma once

#include <expected>
#include <string>
#include <vector>

#include "umdev/cli/commands.h"
#include "umdev/control/definition.h"

namespace umdev::cli::detail {

using Json = nlohmann::json;

// An error as mdevctl reports it: a message and, beneath it, an OS error.
struct Failure {
  std::string message;
  std::string cause;  // Empty: none.
};
template <typename T>
using Try = std::expected<T, Failure>;

// "<strerror> (os error N)", Rust's io::Error text.
std::string OsError(int code);
Failure WithOsError(std::string message, int code);
Outcome Report(const Failure& failure);
std::string QuotedPath(const std::string& path);  // Rust's {:?} of a path.

// One request; a failure reply becomes the daemon's message over its errno.
Try<Json> Ask(const Transport& call, const Json& request);

struct ActiveDevice {
  std::string uuid;
  std::string parent;
  std::string type;
  std::string vm;  // What list -v shows of the VM it serves; empty: closed or none.
};
Try<std::vector<ActiveDevice>> ActiveDevices(const Transport& call);
// "NAME (pid N, accel A, uuid U)" from a list entry's "vm"; empty without one.
std::string DescribeVm(const Json& mdev);

struct Defined {
  std::string parent;
  std::string uuid;
  control::Definition definition;
};
Try<std::vector<Defined>> Definitions(const Transport& call);
// Definitions of |uuid| (optionally under |parent|).
std::vector<Defined> Matching(const std::vector<Defined>& all, const std::string& uuid,
                              const std::optional<std::string>& parent);

// A --jsonfile's JSON, as mdevctl reads it: |read_error| over the OS error
// when it cannot be read, serde_json's wording for a syntax error.
Try<Json> ReadJsonFile(const std::string& path, const std::string& read_error);
// Whether |path| can be opened; |error| over the OS error when not.
Try<void> CheckReadable(const std::string& path, const std::string& error);
// mdevctl's load_from_json: the definition in |json|, or its message.
Try<control::Definition> DefinitionFrom(const Json& json);
// Both, for the commands that read and load at once.
Try<control::Definition> LoadJsonFile(const std::string& path, const std::string& read_error);

// Writes a definition through the daemon (the only writer of mdevctl.d).
Try<void> WriteDefinition(const Transport& call, const std::string& parent,
                          const std::string& uuid, const control::Definition& definition,
                          bool replace);

}  // namespace umdev::cli::detail
