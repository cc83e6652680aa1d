// ClientVm::Identify against real processes: this one, a helper that holds a
// real KVM VM, one that exits, and one that may not be inspected.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "kvm/vm_helper.h"
#include "umdev/kvm/client_vm.h"

namespace umdev::kvm {
namespace {

using ::umdev::testing::CanCreateKvmVm;
using ::umdev::testing::VmHelper;
using ::umdev::testing::VmHelperOptions;

constexpr const char* kVmUuid = "5e1f0000-aaaa-4bbb-8ccc-123456789abc";

// A listening socket in a temporary directory, accepting for the test.
class Listener {
 public:
  Listener() {
    dir_ = std::filesystem::temp_directory_path() /
           ("umdev-kvm-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(dir_);
    std::filesystem::permissions(dir_, std::filesystem::perms::all);
    path_ = (dir_ / "s.sock").string();
    fd_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(fd_.get(), 8), 0);
  }
  ~Listener() { std::filesystem::remove_all(dir_); }
  const std::string& path() const { return path_; }
  UniqueFd Accept() { return UniqueFd(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC)); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
  std::string path_;
  UniqueFd fd_;
};

// Connects to |listener| from this process and returns the server's end.
UniqueFd ConnectSelf(Listener& listener, UniqueFd& client) {
  client = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, listener.path().c_str(), sizeof(addr.sun_path) - 1);
  EXPECT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return listener.Accept();
}

#define SKIP_WITHOUT_KVM()                                                             \
  if (!CanCreateKvmVm()) GTEST_SKIP() << "this host cannot create a KVM VM (/dev/kvm)"

TEST(ClientVmTest, ThisProcessIsNotAVm) {
  Listener listener;
  UniqueFd client;
  UniqueFd server = ConnectSelf(listener, client);
  auto vm = ClientVm::Identify(server.get());
  EXPECT_EQ(vm->identity().pid, ::getpid());
  EXPECT_EQ(vm->identity().accel, "none");
  EXPECT_FALSE(vm->is_vm());
  EXPECT_EQ(vm->vm_fd(), -1);
  EXPECT_GE(vm->pidfd(), 0);
  EXPECT_TRUE(vm->notes().empty()) << vm->NotesText();
  EXPECT_FALSE(vm->identity().cgroup.empty());
  // Two connections of one process are the same "VM" (pid and start time).
  UniqueFd client2;
  UniqueFd server2 = ConnectSelf(listener, client2);
  EXPECT_TRUE(vm->SameVm(*ClientVm::Identify(server2.get())));
}

TEST(ClientVmTest, AHelperHoldingAKvmVmIsAccelKvmAndItsVmFdIsHeld) {
  SKIP_WITHOUT_KVM();
  Listener listener;
  VmHelperOptions options{.name = "web-1", .uuid = kVmUuid, .create_kvm_vm = true,
                          .connect = {listener.path(), listener.path()}};
  auto helper = VmHelper::Spawn(options);
  ASSERT_TRUE(helper.has_value()) << helper.error().Describe();
  UniqueFd first = listener.Accept();
  UniqueFd second = listener.Accept();
  auto vm = ClientVm::Identify(first.get());
  EXPECT_EQ(vm->identity().pid, helper->pid());
  EXPECT_EQ(vm->identity().accel, "kvm");
  EXPECT_EQ(vm->identity().name, "web-1");
  EXPECT_EQ(vm->identity().uuid, kVmUuid);
  EXPECT_TRUE(vm->notes().empty()) << vm->NotesText();
  ASSERT_GE(vm->vm_fd(), 0);
  // Our duplicate is the helper's own VM file.
  EXPECT_EQ(::syscall(SYS_kcmp, ::getpid(), helper->pid(), KCMP_FILE, vm->vm_fd(),
                      helper->vm_fd_in_helper()),
            0);
  char link[64] = {};
  const std::string self = "/proc/self/fd/" + std::to_string(vm->vm_fd());
  ASSERT_GT(::readlink(self.c_str(), link, sizeof(link) - 1), 0);
  EXPECT_STREQ(link, "anon_inode:kvm-vm");
  // Its second connection is the same VM; this process is not.
  EXPECT_TRUE(vm->SameVm(*ClientVm::Identify(second.get())));
  // Another process is not (this one would be: it now holds the VM's fd).
  auto other = VmHelper::Spawn({.connect = {listener.path()}});
  ASSERT_TRUE(other.has_value()) << other.error().Describe();
  UniqueFd third = listener.Accept();
  EXPECT_FALSE(vm->SameVm(*ClientVm::Identify(third.get())));
}

TEST(ClientVmTest, AQemuWithoutAVmFdRunsTcg) {
  Listener listener;
  auto helper = VmHelper::Spawn({.name = "tcg-guest", .connect = {listener.path()}});
  ASSERT_TRUE(helper.has_value()) << helper.error().Describe();
  UniqueFd server = listener.Accept();
  auto vm = ClientVm::Identify(server.get());
  EXPECT_EQ(vm->identity().accel, "tcg");
  EXPECT_EQ(vm->identity().name, "tcg-guest");
  EXPECT_TRUE(vm->is_vm());
}

TEST(ClientVmTest, ThePidfdTurnsReadableWhenTheVmProcessExits) {
  Listener listener;
  auto helper = VmHelper::Spawn({.connect = {listener.path()}});
  ASSERT_TRUE(helper.has_value()) << helper.error().Describe();
  UniqueFd server = listener.Accept();
  auto vm = ClientVm::Identify(server.get());
  pollfd before{vm->pidfd(), POLLIN, 0};
  EXPECT_EQ(::poll(&before, 1, 0), 0);
  helper->Kill();
  pollfd after{vm->pidfd(), POLLIN, 0};
  EXPECT_EQ(::poll(&after, 1, 5000), 1);
}

TEST(ClientVmTest, AnUnreadableProcDegradesToUnknown) {
  Listener listener;
  UniqueFd client;
  UniqueFd server = ConnectSelf(listener, client);
  auto vm = ClientVm::Identify(server.get(), IdentifyOptions{.proc_root = "/nonexistent"});
  EXPECT_EQ(vm->identity().pid, ::getpid());
  EXPECT_EQ(vm->identity().accel, "unknown");
  EXPECT_TRUE(vm->is_vm());
  ASSERT_FALSE(vm->notes().empty());
  EXPECT_NE(vm->NotesText().find("/nonexistent"), std::string::npos);
}

TEST(ClientVmTest, ASocketThatIsNotConnectedIsUnknown) {
  UniqueFd lonely(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto vm = ClientVm::Identify(lonely.get());
  EXPECT_EQ(vm->identity().accel, "unknown");
  EXPECT_FALSE(vm->notes().empty());
}

// Drops CAP_SYS_PTRACE from this (single-threaded, forked) process.
bool DropPtraceCapability() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  data[0].effective &= ~(1u << CAP_SYS_PTRACE);
  data[0].permitted &= ~(1u << CAP_SYS_PTRACE);
  return ::syscall(SYS_capset, &header, data) == 0;
}

TEST(ClientVmTest, AVmOfAnotherUidWithoutPtraceRightsIsIdentifiedAsFarAsProcAllows) {
  SKIP_WITHOUT_KVM();
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to start a helper under another uid";
  Listener listener;
  auto helper = VmHelper::Spawn({.name = "other-user", .uuid = kVmUuid, .create_kvm_vm = true,
                                 .connect = {listener.path()}, .become_uid = 65534});
  ASSERT_TRUE(helper.has_value()) << helper.error().Describe();
  UniqueFd server = listener.Accept();
  int report[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The identifier: root without CAP_SYS_PTRACE, as a daemon run with
    // reduced capabilities is.
    if (!DropPtraceCapability()) ::_exit(2);
    auto vm = ClientVm::Identify(server.get());
    const std::string line = vm->identity().accel + "|" + vm->identity().name + "|" +
                             vm->identity().uuid + "|" + std::to_string(vm->identity().pid) +
                             "|" + std::to_string(vm->vm_fd()) + "|" + vm->NotesText();
    ::_exit(::write(report[1], line.data(), line.size()) == static_cast<ssize_t>(line.size()) ? 0 : 3);
  }
  ::close(report[1]);
  std::string line;
  char buffer[512];
  for (ssize_t n; (n = ::read(report[0], buffer, sizeof(buffer))) > 0;) line.append(buffer, n);
  ::close(report[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // cmdline is world-readable: name and uuid are known; the fds are not.
  const std::string expected_prefix =
      "unknown|other-user|" + std::string(kVmUuid) + "|" + std::to_string(helper->pid()) + "|-1|";
  EXPECT_EQ(line.substr(0, expected_prefix.size()), expected_prefix) << line;
  EXPECT_NE(line.find("VM fd not checked"), std::string::npos) << line;
}

}  // namespace
}  // namespace umdev::kvm
