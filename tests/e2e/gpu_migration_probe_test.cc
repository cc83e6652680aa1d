// Migration of a gpu instance from one real umdevd to another, driven by
// umdev-probe over vfio-user: slice memory and BAR0 registers come across; a
// damaged stream or one for another slice size is refused with EINVAL.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "e2e/two_daemon_probe_test.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;

using Output = ShellOutput;

class GpuMigrationProbeTest : public TwoDaemonProbeTest {
 protected:
  GpuMigrationProbeTest()
      : TwoDaemonProbeTest(R"({"parents":[{"driver":"gpu","engine":"cpu","memory":"16M"}]})",
                           "/tmp/umg-XXXXXX") {}

  static std::string CreateGpu(const UmdevdProcess& daemon, const std::string& type) {
    return CreateInstance(daemon, "gpu-cpu", type);
  }

  // Every step on one connection: the last close resets a gpu function.
  // Slice words through BAR2 and a configured ring (QUEUE_BASE 0x10000, 16
  // entries, enabled; INT_MASK the error cause), then the stream saved.
  fs::path ProgramAndSave(const std::string& socket) {
    const fs::path image = dir_ / "gpu.mig";
    const std::string script =
        "write 2 0 0x11223344 4\n"
        "write 2 0x5000 0xcafef00d 4\n"
        "write 2 0x7ffffc 0x0badf00d 4\n"
        "write 0 32 0x10000 4\n"
        "write 0 40 16 4\n"
        "write 0 44 1 4\n"
        "write 0 76 2 4\n"
        "save " + image.string() + "\n" + kReadBack;
    const Output run = Probe(socket, "-", script);
    EXPECT_EQ(run.status, 0) << run.out;
    ExpectProgrammed(run.out);  // Saving leaves the source as it was.
    return image;
  }

  // What kReadBack prints for a programmed device.
  static void ExpectProgrammed(const std::string& out) {
    EXPECT_NE(out.find("0x11223344\n0xcafef00d\n0x0badf00d\n0x00000000\n"
                       "0x00010000\n0x00000010\n0x00000001\n0x00000002\n"),
              std::string::npos)
        << out;
  }
  static constexpr const char* kReadBack =
      "read 2 0 4\nread 2 0x5000 4\nread 2 0x7ffffc 4\nread 2 0x6000 4\n"
      "read 0 32 4\nread 0 40 4\nread 0 44 4\nread 0 76 4\n";

};

TEST_F(GpuMigrationProbeTest, SliceRegistersAndRingMoveToAnotherDaemon) {
  const std::string source = CreateGpu(*source_, "gpu-1of2");
  const std::string destination = CreateGpu(*destination_, "gpu-1of2");
  const fs::path image = ProgramAndSave(source);
  // Resumed, then the ring goes on: a FENCE of 0x2a to 0x18000 at entry 0,
  // its INTx awaited, the value read back from guest memory and FENCE_DONE.
  const std::string script =
      "resume " + image.string() + "\n" + kReadBack +
      "map-memory 0x10000 --iova 0x10000\n"
      "mem-write 0x10000 04:00:00:00:01:00:00:00:00:80:01:00:00:00:00:00:"
      "2a:00:00:00:00:00:00:00\n"
      "arm-irq 0\n"
      "write 0 52 1 4\n"
      "write 0 56 1 4\n"
      "wait-irq 0 --timeout 20000\n"
      "mem-read 0x18000 8\n"
      "read 0 64 4\n"
      "read 0 48 4\n";
  const Output run = Probe(destination, "-", script);
  ASSERT_EQ(run.status, 0) << run.out;
  ExpectProgrammed(run.out);
  EXPECT_NE(run.out.find("0x0000002a\n0x00000001\n"), std::string::npos) << run.out;
}

TEST_F(GpuMigrationProbeTest, ADamagedStreamIsRefusedAndAGoodOneLoadsAfter) {
  const std::string source = CreateGpu(*source_, "gpu-1of2");
  const std::string destination = CreateGpu(*destination_, "gpu-1of2");
  const fs::path image = ProgramAndSave(source);
  std::vector<char> bytes(fs::file_size(image));
  std::ifstream(image, std::ios::binary)
      .read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_GT(bytes.size(), 32u);
  bytes[0] ^= 0x5a;  // The magic.
  const fs::path bad = dir_ / "bad.mig";
  std::ofstream(bad, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  const Output refused = Probe(destination, "resume " + bad.string());
  EXPECT_EQ(refused.status, 1) << refused.out;
  EXPECT_NE(refused.out.find("(EINVAL)"), std::string::npos) << refused.out;
  // Closing reset the refused device; the good stream goes in afterwards.
  const Output run = Probe(destination, "-", "resume " + image.string() + "\n" + kReadBack);
  ASSERT_EQ(run.status, 0) << run.out;
  ExpectProgrammed(run.out);
}

TEST_F(GpuMigrationProbeTest, AStreamForAnotherSliceSizeIsRefused) {
  const std::string source = CreateGpu(*source_, "gpu-1of2");
  const std::string destination = CreateGpu(*destination_, "gpu-1of4");
  const fs::path image = ProgramAndSave(source);
  const Output refused = Probe(destination, "resume " + image.string());
  EXPECT_EQ(refused.status, 1) << refused.out;
  EXPECT_NE(refused.out.find("(EINVAL)"), std::string::npos) << refused.out;
}

}  // namespace
}  // namespace umdev::test
