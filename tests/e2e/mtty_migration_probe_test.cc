// Migration of an mtty instance from one real umdevd to another, driven by
// umdev-probe over vfio-user: UART registers and FIFO bytes come across, and a
// damaged stream is refused with the errno the stream format prescribes while
// the destination stays usable.
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

// UART registers at BAR0 (region 0) offsets.
constexpr int kRbr = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5, kScr = 7;
constexpr unsigned kLsrDr = 0x01, kLsrTemt = 0x40;
// Stream layout (migration_stream.h): a 24-byte header, then per port the RX
// count at byte 11 of its record.
constexpr size_t kMagicOffset = 0;
constexpr size_t kPort0RxCountOffset = 24 + 11;

using Output = ShellOutput;

class MttyMigrationProbeTest : public TwoDaemonProbeTest {
 protected:
  MttyMigrationProbeTest()
      : TwoDaemonProbeTest(R"({"parents":[{"driver":"mtty"}]})", "/tmp/umm-XXXXXX") {}

  static std::string CreateMtty(const UmdevdProcess& daemon, const std::string& type = "mtty-1") {
    return CreateInstance(daemon, "mtty", type);
  }

  static unsigned ReadReg(const std::string& socket, int offset) {
    const Output read = Probe(socket, "read 0 " + std::to_string(offset) + " 1");
    EXPECT_EQ(read.status, 0) << read.out;
    return static_cast<unsigned>(std::stoul(read.out, nullptr, 16));
  }

  // Programs the source's UART and leaves |bytes| in its receive FIFO: the
  // default far end is loopback, so what is transmitted is received.
  void FillSource(const std::string& socket, const std::string& bytes) {
    std::string script =
        "write 0 3 0x80 1\n"  // DLAB on: the divisor latch
        "write 0 0 0x0c 1\n"  // 9600 baud
        "write 0 1 0x00 1\n"
        "write 0 3 0x1b 1\n"   // 8 bits, even parity, DLAB off
        "write 0 2 0x81 1\n"   // FIFO on, trigger at 8 bytes
        "write 0 7 0x5a 1\n"   // scratch
        "write 0 4 0x0b 1\n";  // DTR, RTS, OUT2
    for (const char byte : bytes) {
      script += fmt::format("write 0 0 {:#04x} 1\n", static_cast<unsigned char>(byte));
    }
    script += "write 0 1 0x05 1\n";  // IER: received data and line status
    const Output run = Probe(socket, "-", script);
    ASSERT_EQ(run.status, 0) << run.out;
    // The loopback line moves the bytes; wait until all were sent and received.
    unsigned lsr = 0;
    for (int i = 0; i < 500 && (lsr & (kLsrDr | kLsrTemt)) != (kLsrDr | kLsrTemt); ++i) {
      lsr = ReadReg(socket, kLsr);
    }
    ASSERT_EQ(lsr & (kLsrDr | kLsrTemt), kLsrDr | kLsrTemt) << "LSR " << lsr;
  }

  void SaveFrom(const std::string& socket, const fs::path& file) {
    const Output save = Probe(socket, "save " + file.string());
    ASSERT_EQ(save.status, 0) << save.out;
    ASSERT_NE(save.out.find("saved "), std::string::npos) << save.out;
  }

  static std::vector<char> ReadFile(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  static void WriteFile(const fs::path& path, const std::vector<char>& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

};

TEST_F(MttyMigrationProbeTest, RegistersAndFifoBytesMoveToAnotherDaemon) {
  const std::string source = CreateMtty(*source_);
  const std::string destination = CreateMtty(*destination_);
  ASSERT_NO_FATAL_FAILURE(FillSource(source, "mig"));
  ASSERT_EQ(ReadReg(source, kIir), 0xccu);
  const fs::path image = dir_ / "mtty.mig";
  ASSERT_NO_FATAL_FAILURE(SaveFrom(source, image));

  const Output resume = Probe(destination, "resume " + image.string());
  ASSERT_EQ(resume.status, 0) << resume.out;
  EXPECT_EQ(ReadReg(destination, kLcr), 0x1bu);
  EXPECT_EQ(ReadReg(destination, kIer), 0x05u);
  EXPECT_EQ(ReadReg(destination, kScr), 0x5au);
  EXPECT_EQ(ReadReg(destination, kMcr), 0x0bu);
  // FIFO on (IIR bits 7:6), and the character-timeout interrupt (0x0c) that
  // three bytes below the trigger of 8 left pending on the source.
  EXPECT_EQ(ReadReg(destination, kIir), 0xccu);
  EXPECT_EQ(ReadReg(destination, kLsr) & (kLsrDr | kLsrTemt), kLsrDr | kLsrTemt);
  EXPECT_EQ(ReadReg(destination, kRbr), static_cast<unsigned>('m'));
  EXPECT_EQ(ReadReg(destination, kRbr), static_cast<unsigned>('i'));
  EXPECT_EQ(ReadReg(destination, kRbr), static_cast<unsigned>('g'));
  EXPECT_EQ(ReadReg(destination, kLsr) & kLsrDr, 0u);
  // The divisor latch came across too.
  ASSERT_EQ(Probe(destination, "write 0 3 0x9b 1").status, 0);
  EXPECT_EQ(ReadReg(destination, 0), 0x0cu);
  EXPECT_EQ(ReadReg(destination, 1), 0x00u);
  // The source kept running with its bytes (save does not consume them).
  EXPECT_EQ(ReadReg(source, kRbr), static_cast<unsigned>('m'));
}

TEST_F(MttyMigrationProbeTest, ADamagedStreamIsRefusedAndTheDestinationStaysUsable) {
  const std::string source = CreateMtty(*source_);
  const std::string destination = CreateMtty(*destination_);
  ASSERT_NO_FATAL_FAILURE(FillSource(source, "ok"));
  const fs::path image = dir_ / "mtty.mig";
  ASSERT_NO_FATAL_FAILURE(SaveFrom(source, image));
  const std::vector<char> good = ReadFile(image);
  ASSERT_GT(good.size(), kPort0RxCountOffset);

  // A FIFO count no 16550 can hold: the record is refused when loaded.
  std::vector<char> bad_record = good;
  bad_record[kPort0RxCountOffset] = 17;
  WriteFile(dir_ / "bad-record.mig", bad_record);
  const Output refused = Probe(destination, "resume " + (dir_ / "bad-record.mig").string());
  EXPECT_EQ(refused.status, 1) << refused.out;
  EXPECT_NE(refused.out.find("(EINVAL)"), std::string::npos) << refused.out;

  // A wrong magic: the header is refused as the kernel sample refuses it.
  std::vector<char> bad_magic = good;
  bad_magic[kMagicOffset] ^= 0x5a;
  WriteFile(dir_ / "bad-magic.mig", bad_magic);
  const Output refused_header = Probe(destination, "resume " + (dir_ / "bad-magic.mig").string());
  EXPECT_EQ(refused_header.status, 1) << refused_header.out;
  EXPECT_NE(refused_header.out.find("(EFAULT)"), std::string::npos) << refused_header.out;

  // Still a working UART, untouched by the refused streams...
  EXPECT_EQ(ReadReg(destination, kLsr) & kLsrDr, 0u);
  ASSERT_EQ(Probe(destination, "write 0 7 0xa5 1").status, 0);
  EXPECT_EQ(ReadReg(destination, kScr), 0xa5u);
  // ...that takes the good stream afterwards.
  const Output resume = Probe(destination, "resume " + image.string());
  ASSERT_EQ(resume.status, 0) << resume.out;
  EXPECT_EQ(ReadReg(destination, kScr), 0x5au);
  EXPECT_EQ(ReadReg(destination, kRbr), static_cast<unsigned>('o'));
  EXPECT_EQ(ReadReg(destination, kRbr), static_cast<unsigned>('k'));
}

TEST_F(MttyMigrationProbeTest, AStreamForAnotherPortCountIsRefused) {
  const std::string source = CreateMtty(*source_);
  const std::string destination = CreateMtty(*destination_, "mtty-2");
  const fs::path image = dir_ / "mtty.mig";
  ASSERT_NO_FATAL_FAILURE(SaveFrom(source, image));
  const Output refused = Probe(destination, "resume " + image.string());
  EXPECT_EQ(refused.status, 1) << refused.out;
  EXPECT_NE(refused.out.find("(EFAULT)"), std::string::npos) << refused.out;
}

}  // namespace
}  // namespace umdev::test
