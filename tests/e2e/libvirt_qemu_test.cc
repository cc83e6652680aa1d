// Real libvirt from the trixie root (libvirtd, virsh) defines, starts and
// destroys the domain `umdevctl libvirt-xml` prints, with an mtty of the real
// umdevd attached. libvirt runs QEMU as its own user (libvirt-qemu), as on an
// installed host, so the daemon's socket owner and allow-list are tested too.
//
// Debian's libvirt daemon is libvirtd (Debian ships no modular virtqemud;
// the QEMU driver is the same). It runs chrooted into the root inside a
// private mount namespace of its own: /proc, /sys and /dev from the host,
// tmpfs over the directories it writes, the test's qemu.conf bound over the
// root's. The cached root is never changed.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "e2e/qemu_qtest.h"
#include "e2e/umdevd_process.h"
#include "umdev/common/uuid.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kDomain = "umdev-libvirt";

std::string ReadText(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The uid the root's passwd gives |user|; nullopt when absent.
std::optional<uid_t> UidInRoot(const fs::path& root, const std::string& user) {
  std::istringstream passwd(ReadText(root / "etc/passwd"));
  for (std::string line; std::getline(passwd, line);) {
    std::vector<std::string> fields;
    std::istringstream split(line);
    for (std::string field; std::getline(split, field, ':');) fields.push_back(field);
    if (fields.size() >= 3 && fields[0] == user) return static_cast<uid_t>(std::stoul(fields[2]));
  }
  return std::nullopt;
}

// libvirtd in its own mount namespace, chrooted into the root; virsh runs
// in the same namespace. Test thread only; the destructor destroys the
// domain, stops the daemon and kills any QEMU it left.
class Libvirt {
 public:
  Libvirt(fs::path root, fs::path scratch, std::string scratch_inside)
      : root_(std::move(root)), scratch_(std::move(scratch)), inside_(std::move(scratch_inside)) {}
  Libvirt(const Libvirt&) = delete;
  Libvirt& operator=(const Libvirt&) = delete;

  ~Libvirt() {
    if (pid_ <= 0) return;
    Virsh(std::string("destroy ") + kDomain);
    kill(pid_, SIGTERM);
    for (int i = 0; i < 100 && waitpid(pid_, nullptr, WNOHANG) == 0; ++i) std::this_thread::sleep_for(50ms);
    if (waitpid(pid_, nullptr, WNOHANG) == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    // A QEMU that outlived the daemon (a failed test): its command line
    // names the scratch dir.
    RunShell("pkill -KILL -f 'qemu-system-x86_64.*" + inside_ + "/' 2>/dev/null");
  }

  Result<void> Start() {
    // libvirt keeps QEMU's output in a file, not virtlogd; no cgroups, no
    // namespaces, no security driver: none of them exists in a chroot.
    std::ofstream(scratch_ / "qemu.conf") << "stdio_handler = \"file\"\n"
                                             "security_driver = \"none\"\n"
                                             "cgroup_controllers = [ ]\n"
                                             "namespaces = [ ]\n"
                                             "remember_owner = 0\n";
    std::ofstream(scratch_ / "libvirtd.conf") << "auth_unix_ro = \"none\"\n"
                                                  "auth_unix_rw = \"none\"\n"
                                                  "log_outputs = \"2:stderr\"\n";
    const std::string r = root_.string();
    std::string script = "set -e\n";
    script += "mount -t proc proc '" + r + "/proc'\n";
    script += "mount --rbind /sys '" + r + "/sys'\n";
    script += "mount --rbind /dev '" + r + "/dev'\n";
    // Where libvirtd writes: runtime and state, and the persistent domain
    // definitions in /etc/libvirt/qemu.
    for (const char* dir :
         {"run", "var/lib/libvirt", "var/cache/libvirt", "var/log/libvirt", "etc/libvirt/qemu"}) {
      script += std::string("mkdir -p '") + r + "/" + dir + "'\n";
      script += std::string("mount -t tmpfs tmpfs '") + r + "/" + dir + "'\n";
    }
    script += "mount --bind '" + (scratch_ / "qemu.conf").string() + "' '" + r + "/etc/libvirt/qemu.conf'\n";
    script += "exec chroot '" + r + "' /usr/sbin/libvirtd --config '" + inside_ + "/libvirtd.conf'\n";
    const std::string log = (scratch_ / "libvirtd.log").string();
    pid_ = fork();
    if (pid_ < 0) return FailErrno("fork");
    if (pid_ == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
      }
      execlp("unshare", "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
             script.c_str(), nullptr);
      _exit(127);
    }
    // Ready once virsh gets an answer (the first start probes QEMU's
    // capabilities under TCG: seconds).
    const auto deadline = std::chrono::steady_clock::now() + 90s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return Fail(EIO, "libvirtd exited:\n" + Log());
      }
      if (Virsh("version").status == 0) return {};
      std::this_thread::sleep_for(200ms);
    }
    return Fail(ETIMEDOUT, "libvirtd did not answer in 90 s:\n" + Log());
  }

  ShellOutput Virsh(const std::string& args) const {
    return RunShell("nsenter --target " + std::to_string(pid_) + " --mount -- chroot '" + root_.string() +
                    "' /usr/bin/virsh --quiet -c qemu:///system " +
                    args + " 2>&1");
  }

  std::string Log() const {
    std::string log = ReadText(scratch_ / "libvirtd.log");
    return log.size() > 8000 ? log.substr(log.size() - 8000) : log;
  }

  // QEMU's own log, kept by libvirt in the namespace's /var/log/libvirt.
  std::string QemuLog() const {
    return RunShell("nsenter --target " + std::to_string(pid_) + " --mount -- tail -c 4000 '" +
                    root_.string() + "/var/log/libvirt/qemu/" + kDomain + ".log' 2>&1")
        .out;
  }

 private:
  fs::path root_;
  fs::path scratch_;
  std::string inside_;
  pid_t pid_ = -1;
};

class LibvirtQemuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto root = QemuRootFromEnvironment();
    if (!root) GTEST_SKIP() << "UMDEV_QEMU_ROOT is not set: run 'make test'";
    root_ = *root;
    ASSERT_EQ(access((root_ / "usr/sbin/libvirtd").c_str(), X_OK), 0)
        << "the QEMU root has no libvirtd: rebuild it with scripts/qemu-root";
    qemu_uid_ = UidInRoot(root_, "libvirt-qemu");
    ASSERT_TRUE(qemu_uid_.has_value()) << "no libvirt-qemu user in the root";
    auto scratch = RootScratchDir::Create(root_);
    ASSERT_TRUE(scratch.has_value()) << scratch.error().Describe();
    scratch_.emplace(std::move(*scratch));
    // QEMU runs as libvirt-qemu: it must reach the sockets below.
    ASSERT_EQ(chmod(scratch_->path().c_str(), 0711), 0);
    auto inside = PathInsideRoot(root_, scratch_->path());
    ASSERT_TRUE(inside.has_value()) << inside.error().Describe();
    inside_ = *inside;

    // What docs/libvirt.md tells an installed host to configure.
    const std::string uid = std::to_string(*qemu_uid_);
    auto daemon = UmdevdProcess::Start(
        UMDEVD, scratch_->path(),
        R"({"parents":[{"driver":"mtty","name":"mtty"}],)"
        R"("vfio_user":{"socket_uid":)" + uid + R"(,"allowed_uids":[)" + uid + "]}}");
    ASSERT_TRUE(daemon.has_value()) << daemon.error().Describe();
    daemon_.emplace(std::move(*daemon));
    uuid_ = Uuid::Generate().ToString();
    ASSERT_TRUE(daemon_->Ctl(UMDEVCTL, "start -p mtty -t mtty-1 -u " + uuid_));

    libvirt_.emplace(root_, scratch_->path(), inside_);
    auto started = libvirt_->Start();
    ASSERT_TRUE(started.has_value()) << started.error().Describe();
  }

  void TearDown() override {
    if (HasFailure() && libvirt_) {
      std::cerr << "libvirtd log:\n" << libvirt_->Log() << "\nQEMU log:\n" << libvirt_->QemuLog();
    }
    if (HasFailure() && daemon_) std::cerr << "\numdevd log:\n" << daemon_->Log();
    libvirt_.reset();  // Before the daemon and the scratch dir go.
  }

  std::string Ctl(const std::string& args) {
    auto out = daemon_->Ctl(UMDEVCTL, args);
    EXPECT_TRUE(out.has_value()) << out.error().Describe();
    return out.value_or("");
  }

  fs::path root_;
  std::optional<uid_t> qemu_uid_;
  std::optional<RootScratchDir> scratch_;
  std::string inside_;
  std::optional<UmdevdProcess> daemon_;
  std::string uuid_;
  std::optional<Libvirt> libvirt_;
};

TEST_F(LibvirtQemuTest, TheDomainLibvirtXmlPrintsStartsWithTheDeviceAndReleasesItOnDestroy) {
  // The domain as printed, with the socket where the chrooted QEMU sees it.
  const std::string xml = Ctl("libvirt-xml " + uuid_ + " --socket-dir " + inside_ +
                              "/state/vfio-user --domain " + kDomain + " -m 128M --virt-type qemu");
  ASSERT_NE(xml.find("<domain type='qemu'"), std::string::npos) << xml;
  std::ofstream(scratch_->path() / "domain.xml") << xml;

  const ShellOutput defined = libvirt_->Virsh("define " + inside_ + "/domain.xml");
  ASSERT_EQ(defined.status, 0) << defined.out;
  const ShellOutput started = libvirt_->Virsh(std::string("start ") + kDomain);
  ASSERT_EQ(started.status, 0) << started.out;
  const ShellOutput domuuid = libvirt_->Virsh(std::string("domuuid ") + kDomain);
  ASSERT_EQ(domuuid.status, 0) << domuuid.out;
  const std::string vm_uuid = domuuid.out.substr(0, domuuid.out.find('\n'));

  // QEMU sees the device: the mtty's IDs on its PCI bus, under the id
  // libvirt-xml gave it.
  const ShellOutput pci =
      libvirt_->Virsh(std::string("qemu-monitor-command ") + kDomain + " --hmp 'info pci'");
  ASSERT_EQ(pci.status, 0) << pci.out;
  EXPECT_NE(pci.out.find("PCI device 4348:3253"), std::string::npos) << pci.out;
  EXPECT_NE(pci.out.find("id \"umdev-" + uuid_ + "\""), std::string::npos) << pci.out;

  // umdevd knows the VM by libvirt's name and UUID; QEMU runs as libvirt-qemu.
  const std::string attrs = Ctl("attr -u " + uuid_);
  EXPECT_NE(attrs.find(std::string("vm_name=") + kDomain + "\n"), std::string::npos) << attrs;
  EXPECT_NE(attrs.find("vm_uuid=" + vm_uuid + "\n"), std::string::npos) << attrs;
  EXPECT_NE(attrs.find("vm_accel=tcg\n"), std::string::npos) << attrs;
  const size_t pid_at = attrs.find("vm_pid=");
  ASSERT_NE(pid_at, std::string::npos) << attrs;
  const std::string pid = attrs.substr(pid_at + 7, attrs.find('\n', pid_at) - pid_at - 7);
  struct stat qemu_proc {};
  ASSERT_EQ(stat(("/proc/" + pid).c_str(), &qemu_proc), 0) << pid;
  EXPECT_EQ(qemu_proc.st_uid, *qemu_uid_);
  EXPECT_NE(Ctl("list -v").find(std::string("  VM: ") + kDomain + " (pid " + pid + ", accel tcg, uuid " +
                                vm_uuid + ")\n"),
            std::string::npos);

  // Destroyed, the device is closed and free for the next VM.
  const ShellOutput destroyed = libvirt_->Virsh(std::string("destroy ") + kDomain);
  ASSERT_EQ(destroyed.status, 0) << destroyed.out;
  std::string accel = "?";
  for (int i = 0; i < 200 && accel != "\n"; ++i) {
    accel = Ctl("attr -u " + uuid_ + " -n vm_accel");
    if (accel != "\n") std::this_thread::sleep_for(25ms);
  }
  EXPECT_EQ(accel, "\n");
  EXPECT_NE(Ctl("list").find(uuid_), std::string::npos);
  const ShellOutput restarted = libvirt_->Virsh(std::string("start ") + kDomain);
  EXPECT_EQ(restarted.status, 0) << restarted.out;
  EXPECT_EQ(libvirt_->Virsh(std::string("destroy ") + kDomain).status, 0);
  EXPECT_EQ(libvirt_->Virsh(std::string("undefine ") + kDomain).status, 0);
}

}  // namespace
}  // namespace umdev::test
