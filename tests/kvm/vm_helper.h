// VmHelper: a stand-in VMM for tests. The test binary re-executes itself
// with an argv of the test's choosing (argv[0] "qemu-system-x86_64", -name,
// -uuid), optionally creates a real KVM VM through /dev/kvm (these machines
// can create one even though a guest cannot run), connects to UNIX sockets
// as a vfio-user client would, and hands the connections back to the test,
// which then speaks the protocol on them while the helper's pid is the peer.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"

namespace umdev::testing {

struct VmHelperOptions {
  std::string argv0 = "qemu-system-x86_64";
  std::string name;  // -name guest=NAME when not empty.
  std::string uuid;  // -uuid UUID when not empty.
  bool create_kvm_vm = false;
  // Sockets to connect to, in order.
  std::vector<std::string> connect;
  // After connecting: drop to this uid (and gid), so that a process without
  // CAP_SYS_PTRACE may not inspect the helper.
  std::optional<uid_t> become_uid;
};

// Test thread only. Destruction kills and reaps the helper.
class VmHelper {
 public:
  // Errors: fork/exec's; EIO the helper failed (its reason in the context);
  // ENODEV /dev/kvm cannot create a VM (the test should skip).
  static Result<VmHelper> Spawn(const VmHelperOptions& options);
  VmHelper(VmHelper&& other) noexcept;
  VmHelper& operator=(VmHelper&&) = delete;
  ~VmHelper();

  pid_t pid() const { return pid_; }
  // The helper's fd number of its VM (for kcmp), or -1.
  int vm_fd_in_helper() const { return vm_fd_; }
  // The connections, one per VmHelperOptions::connect entry; the helper has
  // closed its own copies.
  std::vector<UniqueFd>& sockets() { return sockets_; }
  // SIGKILL and reap; returns once the process is gone.
  void Kill();

 private:
  VmHelper() = default;
  pid_t pid_ = -1;
  int vm_fd_ = -1;
  UniqueFd control_;
  std::vector<UniqueFd> sockets_;
};

// Whether this host can create a KVM VM at all.
bool CanCreateKvmVm();

}  // namespace umdev::testing
