// ClientVm: identifying a client's VM through SO_PEERCRED, pidfds and /proc.
#include "umdev/kvm/client_vm.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "umdev/common/uuid.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // Linux 6.5; older kernels answer ENOPROTOOPT.
#endif

namespace umdev::kvm {
namespace {

// Reads at most |limit| bytes of DIR/NAME. Errors: open's and read's errno.
Result<std::string> ReadAt(int dir, const char* name, size_t limit) {
  UniqueFd fd(::openat(dir, name, O_RDONLY | O_CLOEXEC));
  if (!fd) return FailErrno(fmt::format("open {}", name));
  std::string text;
  char buffer[4096];
  while (text.size() < limit) {
    const ssize_t got = ::read(fd.get(), buffer, std::min(sizeof(buffer), limit - text.size()));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return FailErrno(fmt::format("read {}", name));
    if (got == 0) break;
    text.append(buffer, static_cast<size_t>(got));
  }
  return text;
}

std::vector<std::string_view> SplitArgs(std::string_view cmdline) {
  std::vector<std::string_view> args;
  while (!cmdline.empty()) {
    const size_t end = cmdline.find('\0');
    args.push_back(cmdline.substr(0, end));
    if (end == std::string_view::npos) break;
    cmdline.remove_prefix(end + 1);
  }
  return args;
}

// QemuOpts syntax: "a,b=c,,d": ",," is a literal comma.
std::vector<std::string> SplitOpts(std::string_view text) {
  std::vector<std::string> items(1);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == ',' && i + 1 < text.size() && text[i + 1] == ',') {
      items.back() += ',';
      ++i;
    } else if (text[i] == ',') {
      items.emplace_back();
    } else {
      items.back() += text[i];
    }
  }
  return items;
}

// The value of |key| in a QemuOpts string whose first bare item is |implied|.
std::string OptValue(std::string_view text, std::string_view key, std::string_view implied) {
  const std::vector<std::string> items = SplitOpts(text);
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string& item = items[i];
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      if (i == 0 && key == implied) return item;
      continue;
    }
    if (std::string_view(item).substr(0, eq) == key) return item.substr(eq + 1);
  }
  return {};
}

void AddAccels(std::string_view list, std::vector<std::string>& accels) {
  // "-machine accel=kvm:tcg" lists fallbacks separated by ':'.
  while (!list.empty()) {
    const size_t colon = list.find(':');
    if (!list.substr(0, colon).empty()) accels.emplace_back(list.substr(0, colon));
    if (colon == std::string_view::npos) break;
    list.remove_prefix(colon + 1);
  }
}

std::string_view Basename(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// Through syscall(): glibc 2.36's <sys/pidfd.h> declares these without C
// linkage for C++.
int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int PidfdGetfd(int pidfd, int target) {
  return static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, target, 0));
}

long Kcmp(pid_t pid1, pid_t pid2, int type, unsigned long idx1, unsigned long idx2) {
  return ::syscall(SYS_kcmp, pid1, pid2, type, idx1, idx2);
}

}  // namespace

QemuCommandLine ParseQemuCommandLine(std::string_view cmdline) {
  QemuCommandLine parsed;
  const std::vector<std::string_view> args = SplitArgs(cmdline);
  if (args.empty()) return parsed;
  const std::string_view program = Basename(args[0]);
  parsed.is_qemu = program.starts_with("qemu-system-") || program == "qemu-kvm";
  for (size_t i = 1; i < args.size(); ++i) {
    std::string_view option = args[i];
    if (!option.starts_with('-')) continue;
    option.remove_prefix(option.starts_with("--") ? 2 : 1);
    const bool has_value = i + 1 < args.size();
    const std::string_view value = has_value ? args[i + 1] : std::string_view();
    if (option == "uuid" && has_value) {
      auto uuid = Uuid::Parse(value);
      parsed.uuid = uuid.has_value() ? uuid->ToString() : std::string();
    } else if (option == "name" && has_value) {
      parsed.name = OptValue(value, "guest", "guest");
    } else if (option == "accel" && has_value) {
      AddAccels(OptValue(value, "accel", "accel"), parsed.accels);
    } else if ((option == "machine" || option == "M") && has_value) {
      AddAccels(OptValue(value, "accel", "type"), parsed.accels);
    } else if (option == "enable-kvm") {
      parsed.accels.emplace_back("kvm");
    } else if (option == "qtest") {
      parsed.qtest = true;
    }
  }
  if (std::find(parsed.accels.begin(), parsed.accels.end(), "qtest") != parsed.accels.end()) {
    parsed.qtest = true;
  }
  return parsed;
}

std::shared_ptr<ClientVm> ClientVm::Identify(int socket_fd, const IdentifyOptions& options) {
  auto vm = std::shared_ptr<ClientVm>(new ClientVm());
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(socket_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid <= 0) {
    vm->notes_.push_back(fmt::format("no peer credentials ({})", std::strerror(errno)));
    vm->identity_.accel = "unknown";
    return vm;
  }
  // The pidfd of the process that connected, with no window for pid reuse
  // where the kernel offers it.
  int pidfd = -1;
  len = sizeof(pidfd);
  if (::getsockopt(socket_fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 && pidfd >= 0) {
    vm->pidfd_ = UniqueFd(pidfd);
  }
  vm->Inspect(cred.pid, options);
  return vm;
}

std::shared_ptr<ClientVm> ClientVm::IdentifyProcess(pid_t pid, const IdentifyOptions& options) {
  auto vm = std::shared_ptr<ClientVm>(new ClientVm());
  vm->Inspect(pid, options);
  return vm;
}

void ClientVm::Inspect(pid_t pid, const IdentifyOptions& options) {
  identity_.pid = pid;
  if (!pidfd_) {
    pidfd_ = UniqueFd(PidfdOpen(pid));
    if (!pidfd_) notes_.push_back(fmt::format("pidfd_open: {}", std::strerror(errno)));
  }
  const std::string dir_path = fmt::format("{}/{}", options.proc_root, pid);
  UniqueFd dir(::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) {
    notes_.push_back(fmt::format("{}: {}", dir_path, std::strerror(errno)));
    identity_.accel = "unknown";
    return;
  }
  QemuCommandLine cmdline;
  if (auto text = ReadAt(dir.get(), "cmdline", options.max_cmdline_bytes); text.has_value()) {
    cmdline = ParseQemuCommandLine(*text);
  } else {
    notes_.push_back(text.error().Describe());
  }
  identity_.uuid = cmdline.uuid;
  identity_.name = cmdline.name;
  if (auto stat = ReadAt(dir.get(), "stat", 4096); stat.has_value()) {
    // Field 22 (starttime), counted after the ")" that ends the command name.
    const size_t paren = stat->rfind(')');
    if (paren != std::string::npos) {
      unsigned long long value = 0;
      const char* p = stat->c_str() + paren + 1;
      if (std::sscanf(p, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                      "%*d %*d %llu", &value) == 1) {
        start_time_ = value;
      }
    }
  }
  if (auto cgroup = ReadAt(dir.get(), "cgroup", 4096); cgroup.has_value()) {
    // cgroup v2: the single "0::PATH" line.
    const size_t at = cgroup->find("0::");
    if (at != std::string::npos) {
      const size_t end = cgroup->find('\n', at);
      identity_.cgroup = cgroup->substr(at + 3, end == std::string::npos ? end : end - at - 3);
    }
  }
  FindVmFd(dir.get(), options);

  if (vm_fd_seen_) {
    identity_.accel = "kvm";  // Held in vm_fd_ unless ptrace rules refused it (noted).
  } else if (cmdline.qtest) {
    identity_.accel = "qtest";
  } else if (fds_unreadable_) {
    identity_.accel = "unknown";  // It may hold a VM fd we may not see.
  } else if (cmdline.is_qemu) {
    // No VM fd: whatever was asked for, QEMU runs TCG (its fallback).
    identity_.accel = "tcg";
  } else {
    identity_.accel = "none";
  }
  // The pid named this process all along only if it is still alive now.
  if (pidfd_ && ::syscall(SYS_pidfd_send_signal, pidfd_.get(), 0, nullptr, 0) != 0) {
    notes_.push_back(fmt::format("the process exited while being identified ({})",
                                 std::strerror(errno)));
  }
}

void ClientVm::FindVmFd(int proc_dir, const IdentifyOptions& options) {
  UniqueFd fd_dir(::openat(proc_dir, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd_dir) {
    fds_unreadable_ = true;
    notes_.push_back(fmt::format("cannot list the fds ({}): VM fd not checked",
                                 std::strerror(errno)));
    return;
  }
  DIR* listing = ::fdopendir(fd_dir.get());
  if (listing == nullptr) return;
  (void)fd_dir.Release();  // Owned by |listing| now.
  size_t scanned = 0;
  int found = -1;
  while (dirent* entry = ::readdir(listing)) {
    if (entry->d_name[0] == '.') continue;
    if (++scanned > options.max_fds_scanned) {
      notes_.push_back(fmt::format("more than {} fds: VM fd search stopped",
                                   options.max_fds_scanned));
      break;
    }
    char target[64] = {};
    const ssize_t n = ::readlinkat(::dirfd(listing), entry->d_name, target, sizeof(target) - 1);
    if (n < 0 && (errno == EACCES || errno == EPERM)) {
      // The directory of a non-dumpable process is root's, but each link
      // needs ptrace rights over it.
      fds_unreadable_ = true;
      notes_.push_back(fmt::format("cannot read the fds ({}): VM fd not checked",
                                   std::strerror(errno)));
      break;
    }
    if (n > 0 && std::string_view(target, static_cast<size_t>(n)) == "anon_inode:kvm-vm") {
      found = std::atoi(entry->d_name);
      break;
    }
  }
  ::closedir(listing);
  if (found < 0) return;
  vm_fd_seen_ = true;
  if (!pidfd_) {
    notes_.push_back("VM fd found but no pidfd to duplicate it");
    fds_unreadable_ = true;
    return;
  }
  vm_fd_ = UniqueFd(PidfdGetfd(pidfd_.get(), found));
  if (!vm_fd_) {
    fds_unreadable_ = true;
    notes_.push_back(fmt::format("pidfd_getfd of the VM fd: {}", std::strerror(errno)));
  }
}

bool ClientVm::SameVm(const Vm& other) const {
  const auto* peer = dynamic_cast<const ClientVm*>(&other);
  if (peer == nullptr) return false;
  if (peer == this) return true;
  if (vm_fd_ && peer->vm_fd_) {
    const pid_t self = ::getpid();
    return Kcmp(self, self, KCMP_FILE, static_cast<unsigned long>(vm_fd_.get()),
                static_cast<unsigned long>(peer->vm_fd_.get())) == 0;
  }
  return identity_.pid == peer->identity_.pid && start_time_ != 0 &&
         start_time_ == peer->start_time_;
}

std::string ClientVm::NotesText() const { return fmt::format("{}", fmt::join(notes_, "; ")); }

}  // namespace umdev::kvm
