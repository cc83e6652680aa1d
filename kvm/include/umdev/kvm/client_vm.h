// ClientVm: the VM (or plain process) at the other end of a client socket,
// found by identity and held for its lifetime, as far as a process that is
// not the VM can: every KVM ioctl from another mm is EIO, so umdev holds
// the VM's fd (keeping the VM alive, as the kernel's kvm reference does)
// and compares it, but never calls into it.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/unique_fd.h"
#include "umdev/mdev_core/vm.h"

namespace umdev::kvm {

// What QEMU's command line says about the VM.
struct QemuCommandLine {
  std::string uuid;                  // -uuid, lower case; empty if absent or malformed.
  std::string name;                  // -name NAME or -name guest=NAME,...
  std::vector<std::string> accels;   // -accel / -machine accel= / -enable-kvm, in order.
  bool qtest = false;                // -qtest (QEMU then runs accel qtest).
  bool is_qemu = false;              // argv[0] names a QEMU system emulator.
};

// Parses a NUL-separated argv (/proc/PID/cmdline). Pure; any input is safe.
QemuCommandLine ParseQemuCommandLine(std::string_view cmdline);

// Limits on what is read from /proc for one client.
struct IdentifyOptions {
  // /proc (a test may point it elsewhere).
  std::string proc_root = "/proc";
  size_t max_cmdline_bytes = 256 * 1024;
  // The most fd entries inspected while looking for the VM fd.
  size_t max_fds_scanned = 65536;
};

// Thread-safe; immutable after Identify().
class ClientVm final : public Vm {
 public:
  // Identifies the peer of a connected UNIX socket: its pidfd (SO_PEERPIDFD,
  // or pidfd_open at once on older kernels), its KVM VM fd (duplicated with
  // pidfd_getfd where ptrace rules allow), its -uuid, -name, accel and
  // cgroup. Never fails: what cannot be read stays empty or "unknown", and
  // notes() says why.
  static std::shared_ptr<ClientVm> Identify(int socket_fd, const IdentifyOptions& options = {});
  // The same for a process by pid (the daemon itself, tests).
  static std::shared_ptr<ClientVm> IdentifyProcess(pid_t pid,
                                                   const IdentifyOptions& options = {});

  const VmIdentity& identity() const override { return identity_; }
  // The same KVM VM (kcmp of the two VM fds) when both fds are held;
  // otherwise the same process (pid and start time).
  bool SameVm(const Vm& other) const override;

  // Readable (POLLIN) once the process has exited; -1 if none could be opened.
  int pidfd() const { return pidfd_.get(); }
  // The VM's anon_inode:kvm-vm fd, held while this object lives; -1 if none.
  int vm_fd() const { return vm_fd_.get(); }
  // What could not be read, for one log line; empty when everything was.
  const std::vector<std::string>& notes() const { return notes_; }
  std::string NotesText() const;

 private:
  ClientVm() = default;
  void Inspect(pid_t pid, const IdentifyOptions& options);
  void FindVmFd(int proc_dir, const IdentifyOptions& options);

  VmIdentity identity_;
  unsigned long long start_time_ = 0;  // /proc/PID/stat field 22; 0 unknown.
  UniqueFd pidfd_;
  UniqueFd vm_fd_;
  bool fds_unreadable_ = false;  // /proc/PID/fd or pidfd_getfd refused.
  bool vm_fd_seen_ = false;      // /proc/PID/fd showed an anon_inode:kvm-vm.
  std::vector<std::string> notes_;
};

}  // namespace umdev::kvm
