// The Debian package (make deb) in a fresh Debian 12 root (scripts/debian-root):
// dpkg installs it with only the declared dependencies present, it enables
// nothing, umdevd --help and a started daemon answer umdevctl types, and a
// purge leaves nothing behind.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "e2e/umdevd_process.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;

class DebPackageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* deb = std::getenv("UMDEV_DEB");
    const char* root = std::getenv("UMDEV_DEBIAN_ROOT");
    if (deb == nullptr || root == nullptr || *deb == '\0' || *root == '\0') {
      GTEST_SKIP() << "UMDEV_DEB and UMDEV_DEBIAN_ROOT are not set: 'make test' builds the "
                      "package (make deb) and the Debian 12 root (scripts/debian-root)";
    }
    deb_ = deb;
    root_ = root;
    ASSERT_TRUE(fs::exists(deb_)) << deb_;
    // A run that failed half way may have left the package in the root.
    InRoot("dpkg --purge umdev");
    fs::copy_file(deb_, root_ / "tmp/umdev.deb", fs::copy_options::overwrite_existing);
  }

  void TearDown() override {
    if (!root_.empty()) {
      InRoot("test -f /tmp/umdevd.pid && kill $(cat /tmp/umdevd.pid); rm -f /tmp/umdevd.pid");
      InRoot("dpkg --purge umdev");
      fs::remove(root_ / "tmp/umdev.deb");
    }
  }

  ShellOutput InRoot(const std::string& command) const {
    return RunShell("chroot " + root_.string() +
                    " /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "
                    "sh -c '" + command + "' 2>&1");
  }

  fs::path deb_;
  fs::path root_;
};

TEST_F(DebPackageTest, InstallsRunsAndPurgesCleanly) {
  const ShellOutput installed = InRoot("dpkg -i /tmp/umdev.deb");
  ASSERT_EQ(installed.status, 0) << installed.out;
  // Nothing enabled or started behind the user's back.
  EXPECT_FALSE(fs::exists(root_ / "etc/systemd/system/multi-user.target.wants/umdevd.service"));
  EXPECT_TRUE(fs::exists(root_ / "usr/lib/systemd/system/umdevd.service"));
  EXPECT_FALSE(fs::exists(root_ / "usr/bin/lsmdev"));
  EXPECT_EQ(InRoot("dpkg-query -W -f=\"\\${Conffiles}\" umdev").out.find("/etc/umdev/umdevd.json"),
            1u);

  const ShellOutput help = InRoot("umdevd --help");
  EXPECT_EQ(help.status, 0) << help.out;
  EXPECT_NE(help.out.find("--definitions-dir"), std::string::npos) << help.out;
  // The device plugin's gRPC and protobuf come with the package's dependencies.
  const ShellOutput plugin_help = InRoot("umdev-device-plugin --help");
  EXPECT_EQ(plugin_help.status, 0) << plugin_help.out;
  EXPECT_NE(plugin_help.out.find("--plugin-dir"), std::string::npos) << plugin_help.out;

  // The shipped configuration serves the mtty parent.
  InRoot("umdevd --state-dir /tmp/umdev-state --config /etc/umdev/umdevd.json "
         ">/tmp/umdevd.log 2>&1 & echo $! >/tmp/umdevd.pid");
  for (int i = 0; i < 500 && !fs::exists(root_ / "tmp/umdev-state/control.sock"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const ShellOutput types = InRoot("umdevctl --state-dir /tmp/umdev-state types");
  EXPECT_EQ(types.status, 0) << types.out << InRoot("cat /tmp/umdevd.log").out;
  EXPECT_NE(types.out.find("mtty\n  mtty-1\n"), std::string::npos) << types.out;
  InRoot("kill $(cat /tmp/umdevd.pid); rm -f /tmp/umdevd.pid");
  for (int i = 0; i < 500 && fs::exists(root_ / "tmp/umdev-state/control.sock"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  fs::remove_all(root_ / "tmp/umdev-state");
  fs::remove(root_ / "tmp/umdevd.log");

  const ShellOutput purged = InRoot("dpkg --purge umdev");
  ASSERT_EQ(purged.status, 0) << purged.out;
  EXPECT_NE(InRoot("dpkg -s umdev").status, 0);
  for (const char* path : {"usr/sbin/umdevd", "usr/bin/umdevctl", "usr/bin/umdev-probe",
                           "usr/bin/umdev-gpu", "usr/sbin/umdev-device-plugin", "etc/umdev", "usr/share/doc/umdev", "usr/lib/systemd/system/umdevd.service",
                           "var/lib/umdev"}) {
    EXPECT_FALSE(fs::exists(root_ / path)) << path << " survived the purge";
  }
}

// Lintian finds no error or warning; the overrides it honours are in
// tools/service/debian/lintian-overrides, each with its reason. (Not a
// DebPackageTest: that fixture installs into and purges the shared root.)
TEST(DebLintianTest, LintianHasNoErrorsOrWarnings) {
  const char* deb = std::getenv("UMDEV_DEB");
  if (deb == nullptr || *deb == '\0') GTEST_SKIP() << "UMDEV_DEB is not set: run 'make test'";
  const ShellOutput lint = RunShell(std::string("lintian --tag-display-limit 0 ") + deb + " 2>&1");
  EXPECT_EQ(lint.status, 0) << lint.out;
  EXPECT_EQ(lint.out.find("E: "), std::string::npos) << lint.out;
  EXPECT_EQ(lint.out.find("W: "), std::string::npos) << lint.out;
}

// The binaries carry Debian's hardening (cmake/umdev.cmake): full RELRO
// with immediate binding, PIE, the stack protector and fortified libc
// calls; lintian has no hardening tag left even among its notes.
TEST(DebHardeningTest, EveryBinaryIsHardened) {
  const char* deb = std::getenv("UMDEV_DEB");
  if (deb == nullptr || *deb == '\0') GTEST_SKIP() << "UMDEV_DEB is not set: run 'make test'";
  char pattern[] = "/tmp/umdev-deb-XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const fs::path dir = pattern;
  ASSERT_EQ(RunShell(std::string("dpkg-deb -x ") + deb + " " + dir.string()).status, 0);
  for (const char* binary : {"usr/sbin/umdevd", "usr/bin/umdevctl", "usr/bin/umdev-probe",
                             "usr/bin/umdev-gpu", "usr/sbin/umdev-device-plugin"}) {
    const std::string path = (dir / binary).string();
    const ShellOutput dynamic = RunShell("readelf -dW " + path);
    EXPECT_NE(dynamic.out.find("BIND_NOW"), std::string::npos) << binary << dynamic.out;
    EXPECT_NE(RunShell("readelf -lW " + path).out.find("GNU_RELRO"), std::string::npos) << binary;
    EXPECT_NE(RunShell("readelf -hW " + path).out.find("DYN (Position-Independent"), std::string::npos)
        << binary;
    const ShellOutput symbols = RunShell("readelf --dyn-syms -W " + path);
    EXPECT_NE(symbols.out.find("__stack_chk_fail"), std::string::npos) << binary;
    EXPECT_NE(symbols.out.find("_chk@"), std::string::npos) << binary << ": no fortified call";
  }
  fs::remove_all(dir);
  const ShellOutput notes = RunShell(std::string("lintian --display-info --tag-display-limit 0 ") + deb + " 2>&1");
  EXPECT_EQ(notes.out.find("hardening-"), std::string::npos) << notes.out;
}

}  // namespace
}  // namespace umdev::test
