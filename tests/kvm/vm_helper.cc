// VmHelper: the test binary re-executed as a stand-in VMM.
#include "kvm/vm_helper.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace umdev::testing {
namespace {

constexpr const char* kHelperEnv = "UMDEV_VM_HELPER_FD";
constexpr size_t kMaxSockets = 8;

// The helper's side: runs before main() in the re-executed binary, using
// only system calls, and never returns.
[[noreturn]] void HelperMain(int control, int argc, char** argv) {
  const auto fail = [control](const char* what) {
    char text[128];
    const int n = std::snprintf(text, sizeof(text), "E%d %s", errno, what);
    (void)::send(control, text, static_cast<size_t>(n), MSG_NOSIGNAL);
    ::_exit(3);
  };
  int vm = -1;
  int sockets[kMaxSockets];
  size_t count = 0;
  long uid = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--kvm") {
      const int kvm = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
      if (kvm < 0) fail("open /dev/kvm");
      vm = ::ioctl(kvm, KVM_CREATE_VM, 0);
      if (vm < 0) fail("KVM_CREATE_VM");
      ::close(kvm);  // The VM fd keeps the VM; QEMU also keeps only what it needs.
    } else if (arg == "--connect" && i + 1 < argc && count < kMaxSockets) {
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, argv[++i], sizeof(addr.sun_path) - 1);
      const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        fail("connect");
      }
      sockets[count++] = fd;
    } else if (arg == "--uid" && i + 1 < argc) {
      uid = std::strtol(argv[++i], nullptr, 10);
    }
  }
  if (uid >= 0) {
    if (::setresgid(static_cast<gid_t>(uid), static_cast<gid_t>(uid), static_cast<gid_t>(uid)) ||
        ::setresuid(static_cast<uid_t>(uid), static_cast<uid_t>(uid), static_cast<uid_t>(uid))) {
      fail("setresuid");
    }
  }
  char payload[8] = {'O', 'K', 0, 0};
  std::memcpy(payload + 4, &vm, sizeof(vm));
  iovec iov{payload, sizeof(payload)};
  alignas(cmsghdr) char control_buffer[CMSG_SPACE(sizeof(int) * kMaxSockets)] = {};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  if (count > 0) {
    message.msg_control = control_buffer;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    if (header == nullptr) fail("cmsg");
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * count);
    std::memcpy(CMSG_DATA(header), sockets, sizeof(int) * count);
  }
  if (::sendmsg(control, &message, MSG_NOSIGNAL) < 0) fail("sendmsg");
  for (size_t i = 0; i < count; ++i) ::close(sockets[i]);
  // Live until the test closes its end (or kills us).
  char byte;
  while (::read(control, &byte, 1) < 0 && errno == EINTR) {
  }
  ::_exit(0);
}

__attribute__((constructor)) void MaybeRunAsHelper(int argc, char** argv, char** /*envp*/) {
  const char* fd = std::getenv(kHelperEnv);
  if (fd == nullptr) return;
  HelperMain(std::atoi(fd), argc, argv);
}

}  // namespace

Result<VmHelper> VmHelper::Spawn(const VmHelperOptions& options) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return FailErrno("socketpair");
  }
  UniqueFd ours(pair[0]);
  UniqueFd theirs(pair[1]);
  // Everything the child needs is built before fork: it only execs.
  std::vector<std::string> args = {options.argv0};
  if (!options.name.empty()) args.insert(args.end(), {"-name", "guest=" + options.name});
  if (!options.uuid.empty()) args.insert(args.end(), {"-uuid", options.uuid});
  if (options.create_kvm_vm) args.emplace_back("--kvm");
  for (const std::string& path : options.connect) args.insert(args.end(), {"--connect", path});
  if (options.become_uid) args.insert(args.end(), {"--uid", std::to_string(*options.become_uid)});
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::string env = std::string(kHelperEnv) + "=" + std::to_string(theirs.get());
  std::vector<char*> envp = {env.data(), nullptr};
  const pid_t pid = ::fork();
  if (pid < 0) return FailErrno("fork");
  if (pid == 0) {
    ::fcntl(pair[1], F_SETFD, 0);
    ::execve("/proc/self/exe", argv.data(), envp.data());
    ::_exit(127);
  }
  theirs.Reset();
  VmHelper helper;
  helper.pid_ = pid;
  helper.control_ = std::move(ours);
  pollfd ready{helper.control_.get(), POLLIN, 0};
  if (::poll(&ready, 1, 10'000) != 1) return Fail(ETIMEDOUT, "the VM helper did not report");
  char payload[160] = {};
  alignas(cmsghdr) char control_buffer[CMSG_SPACE(sizeof(int) * kMaxSockets)] = {};
  iovec iov{payload, sizeof(payload) - 1};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control_buffer;
  message.msg_controllen = sizeof(control_buffer);
  const ssize_t got = ::recvmsg(helper.control_.get(), &message, MSG_CMSG_CLOEXEC);
  if (got <= 0) return Fail(EIO, "the VM helper exited without reporting");
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
       header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    const size_t n = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof(int));
      helper.sockets_.emplace_back(fd);
    }
  }
  if (payload[0] == 'E') {
    const int code = std::atoi(payload + 1);
    const std::string text(payload);
    return Fail(text.find("KVM") != std::string::npos || text.find("/dev/kvm") != std::string::npos
                    ? ENODEV
                    : EIO,
                "VM helper: " + text + " (" + std::strerror(code) + ")");
  }
  std::memcpy(&helper.vm_fd_, payload + 4, sizeof(int));
  return helper;
}

VmHelper::VmHelper(VmHelper&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      vm_fd_(other.vm_fd_),
      control_(std::move(other.control_)),
      sockets_(std::move(other.sockets_)) {}

VmHelper::~VmHelper() { Kill(); }

void VmHelper::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

bool CanCreateKvmVm() {
  UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm) return false;
  UniqueFd vm(::ioctl(kvm.get(), KVM_CREATE_VM, 0));
  return static_cast<bool>(vm);
}

}  // namespace umdev::testing
