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

// How QEMU reaches one running device (qemu-args, libvirt-xml).
struct Attachment {
  std::string uuid;
  std::string socket;         // Absolute path of its vfio-user socket.
  std::string bound_vm_uuid;  // The VM UUID it opens for; empty: any VM.
  // QEMU's JSON -device value; |with_id| names it "umdev-UUID" so that a
  // monitor's device_del can find it.
  std::string DeviceJson(bool with_id) const;
};
// |socket_dir|: where QEMU finds the sockets (STATE_DIR/vfio-user unless
// QEMU runs in a container or chroot that mounts them elsewhere).
// |active|: the running devices, fetched once by the caller however many
// UUIDs it attaches. Errors: "Mediated device U is not active", or the
// daemon unreachable.
Try<Attachment> AttachmentOf(const Transport& call, const std::vector<ActiveDevice>& active,
                             const Uuid& uuid, const std::string& socket_dir);
// The socket dir QEMU sees: |socket_dir| when given, else STATE_DIR/vfio-user.
std::string SocketDirFor(const std::string& state_dir, const std::optional<std::string>& socket_dir);

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
