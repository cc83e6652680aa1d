// ParseQemuCommandLine: what QEMU's argv says about the VM.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "umdev/kvm/client_vm.h"

namespace umdev::kvm {
namespace {

std::string Argv(const std::vector<std::string>& args) {
  std::string out;
  for (const std::string& arg : args) {
    out += arg;
    out += '\0';
  }
  return out;
}

TEST(QemuCommandLineTest, LibvirtStyleNameUuidAndAccel) {
  const auto parsed = ParseQemuCommandLine(Argv(
      {"/usr/bin/qemu-system-x86_64", "-name", "guest=web-1,debug-threads=on", "-S", "-uuid",
       "C0FFEE00-1111-4222-8333-444455556666", "-accel", "kvm", "-machine",
       "pc-q35-9.0,usb=off,dump-guest-core=off"}));
  EXPECT_TRUE(parsed.is_qemu);
  EXPECT_EQ(parsed.name, "web-1");
  EXPECT_EQ(parsed.uuid, "c0ffee00-1111-4222-8333-444455556666");
  EXPECT_EQ(parsed.accels, (std::vector<std::string>{"kvm"}));
  EXPECT_FALSE(parsed.qtest);
}

TEST(QemuCommandLineTest, PlainNameWithEscapedCommaAndDoubleDashOptions) {
  const auto parsed = ParseQemuCommandLine(
      Argv({"qemu-system-aarch64", "--name", "a,,b,process=x", "--uuid", "not-a-uuid"}));
  EXPECT_EQ(parsed.name, "a,b");
  EXPECT_EQ(parsed.uuid, "");  // Malformed: unknown rather than wrong.
}

TEST(QemuCommandLineTest, AccelFromMachineListEnableKvmAndAccelKey) {
  auto parsed = ParseQemuCommandLine(Argv({"qemu-kvm", "-M", "q35,accel=kvm:tcg"}));
  EXPECT_TRUE(parsed.is_qemu);
  EXPECT_EQ(parsed.accels, (std::vector<std::string>{"kvm", "tcg"}));
  parsed = ParseQemuCommandLine(Argv({"qemu-system-x86_64", "-enable-kvm", "-accel",
                                      "accel=tcg,thread=single"}));
  EXPECT_EQ(parsed.accels, (std::vector<std::string>{"kvm", "tcg"}));
}

TEST(QemuCommandLineTest, QtestFromOptionOrAccel) {
  EXPECT_TRUE(ParseQemuCommandLine(Argv({"qemu-system-x86_64", "-qtest", "unix:/s"})).qtest);
  EXPECT_TRUE(ParseQemuCommandLine(Argv({"qemu-system-x86_64", "-accel", "qtest"})).qtest);
  EXPECT_FALSE(ParseQemuCommandLine(Argv({"qemu-system-x86_64", "-accel", "tcg"})).qtest);
}

TEST(QemuCommandLineTest, OtherProgramsAndTrailingOptionsWithoutValues) {
  auto parsed = ParseQemuCommandLine(Argv({"/usr/bin/umdev-probe", "--socket", "x", "-uuid"}));
  EXPECT_FALSE(parsed.is_qemu);
  EXPECT_EQ(parsed.uuid, "");
  parsed = ParseQemuCommandLine(Argv({"qemu-system-x86_64", "-name"}));
  EXPECT_EQ(parsed.name, "");
  EXPECT_FALSE(ParseQemuCommandLine("").is_qemu);
  // No trailing NUL (a truncated read) still parses what is there.
  parsed = ParseQemuCommandLine(std::string("qemu-system-x86_64\0-name\0vm", 27));
  EXPECT_EQ(parsed.name, "vm");
}

TEST(QemuCommandLineTest, RandomBytesNeverCrash) {
  std::mt19937 random(7);
  for (int round = 0; round < 2000; ++round) {
    std::string bytes(random() % 200, '\0');
    for (char& c : bytes) c = static_cast<char>("-,=:\0qemuidnax"[random() % 14]);
    (void)ParseQemuCommandLine(bytes);
  }
}

}  // namespace
}  // namespace umdev::kvm
