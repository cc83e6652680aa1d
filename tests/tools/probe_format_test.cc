// umdev-probe's pure parts: lspci-style config decoding and script words.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "umdev/probe/pci_format.h"
#include "umdev/probe/session.h"

namespace umdev::probe {
namespace {

class ConfigBuilder {
 public:
  explicit ConfigBuilder(size_t size) : bytes_(size) {}
  ConfigBuilder& Put(size_t offset, uint32_t value, size_t width) {
    std::memcpy(bytes_.data() + offset, &value, width);
    return *this;
  }
  const std::vector<std::byte>& bytes() const { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

std::string Joined(const PciDescription& pci) {
  std::string out;
  for (const std::string& line : pci.lines) out += line + "\n";
  return out;
}

// A PCIe endpoint with an I/O BAR, a 64-bit prefetchable BAR, a ROM and the
// capability list PM -> MSI -> MSI-X -> Express -> vendor, plus AER.
ConfigBuilder SampleDevice() {
  ConfigBuilder c(4096);
  c.Put(0x00, 0x1af4, 2).Put(0x02, 0x10f1, 2).Put(0x04, 0x0407, 2).Put(0x06, 0x0010, 2);
  c.Put(0x08, 0x03000001, 4);  // Class 0300 prog-if 00, rev 01.
  c.Put(0x10, 0xc001, 4);      // BAR0: I/O at 0xc000.
  c.Put(0x18, 0xe000000c, 4).Put(0x1c, 0x1, 4);  // BAR2/3: 64-bit prefetchable.
  c.Put(0x2c, 0x1af4, 2).Put(0x2e, 0x1100, 2);
  c.Put(0x30, 0xfeb00000, 4);
  c.Put(0x34, 0x40, 1).Put(0x3d, 1, 1);
  c.Put(0x40, 0x5001, 2).Put(0x42, 0x0003, 2).Put(0x44, 0x0000, 2);       // PM v3.
  c.Put(0x50, 0x7005, 2).Put(0x52, 0x0186, 2).Put(0x54, 0xfee00000, 4);  // MSI 64-bit maskable.
  c.Put(0x5c, 0x4021, 2);
  c.Put(0x70, 0x8011, 2).Put(0x72, 0x8007, 2).Put(0x74, 0x2000, 4).Put(0x78, 0x3000, 4);
  c.Put(0x80, 0xc010, 2).Put(0x82, 0x0002, 2).Put(0x84, 0x00000001, 4);  // Express v2 endpoint.
  c.Put(0x88, 0x2010, 2).Put(0x8c, 0x00000103, 4);
  c.Put(0x92, 0x0103, 2);  // LnkSta: 8GT/s x16.
  c.Put(0xc0, 0x0009, 2).Put(0xc2, 0x14, 1);  // Vendor-specific, end of list.
  c.Put(0x100, 0x00010001, 4);  // AER v1, end of list.
  return c;
}

TEST(PciFormatTest, DecodesHeaderBarsAndRomLikeLspci) {
  const ConfigBuilder config = SampleDevice();
  const std::vector<PciRegion> regions = {{0, 3, 8}, {2, 7, 256u << 20}, {6, 1, 64u << 10}};
  const PciDescription pci = DescribePci(config.bytes(), regions);
  const std::string text = Joined(pci);
  EXPECT_NE(text.find("Display controller [0300]: Device [1af4:10f1] (rev 01)"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\tSubsystem: Device [1af4:1100]\n"), std::string::npos);
  EXPECT_NE(text.find("\tControl: I/O+ Mem+ BusMaster+ SpecCycle- MemWINV- VGASnoop- ParErr- "
                      "Stepping- SERR- FastB2B- DisINTx+\n"),
            std::string::npos);
  EXPECT_NE(text.find("\tStatus: Cap+ 66MHz- "), std::string::npos);
  EXPECT_NE(text.find("\tInterrupt: pin A\n"), std::string::npos);
  EXPECT_NE(text.find("\tRegion 0: I/O ports at c000 [size=8]\n"), std::string::npos);
  EXPECT_NE(text.find("\tRegion 2: Memory at 1e0000000 (64-bit, prefetchable) [size=256M]\n"),
            std::string::npos);
  EXPECT_NE(text.find("\tExpansion ROM at feb00000 [disabled] [size=64K]\n"), std::string::npos);
  EXPECT_EQ(pci.json["vendor_id"], 0x1af4);
  ASSERT_EQ(pci.json["bars"].size(), 2u);
  EXPECT_EQ(pci.json["bars"][1]["bits"], 64);
  EXPECT_EQ(pci.json["bars"][1]["size"], 256u << 20);
}

TEST(PciFormatTest, DecodesTheCapabilityLists) {
  const PciDescription pci = DescribePci(SampleDevice().bytes(), {});
  const std::string text = Joined(pci);
  EXPECT_NE(text.find("\tCapabilities: [40] Power Management version 3\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\t\tStatus: D0 NoSoftRst- PME-Enable- DSel=0 DScale=0 PME-\n"),
            std::string::npos);
  EXPECT_NE(text.find("\tCapabilities: [50] MSI: Enable- Count=1/8 Maskable+ 64bit+\n"),
            std::string::npos);
  EXPECT_NE(text.find("\t\tAddress: 00000000fee00000  Data: 4021\n"), std::string::npos);
  EXPECT_NE(text.find("\tCapabilities: [70] MSI-X: Enable+ Count=8 Masked-\n"), std::string::npos);
  EXPECT_NE(text.find("\t\tVector table: BAR=0 offset=00002000\n"), std::string::npos);
  EXPECT_NE(text.find("\tCapabilities: [80] Express (v2) Endpoint, MSI 00\n"), std::string::npos);
  EXPECT_NE(text.find("\t\tDevCap: MaxPayload 256 bytes"), std::string::npos);
  EXPECT_NE(text.find("\t\tLnkSta: Speed 8GT/s, Width x16\n"), std::string::npos);
  EXPECT_NE(text.find("\tCapabilities: [c0] Vendor Specific Information: Len=14 <?>\n"), std::string::npos);
  EXPECT_NE(text.find("\tCapabilities: [100 v1] Advanced Error Reporting\n"), std::string::npos);
  ASSERT_EQ(pci.json["capabilities"].size(), 5u);
  EXPECT_EQ(pci.json["capabilities"][2]["name"], "MSI-X");
  EXPECT_EQ(pci.json["capabilities"][2]["count"], 8);
}

TEST(PciFormatTest, ALoopingOrTruncatedListEnds) {
  ConfigBuilder c(256);
  c.Put(0x06, 0x0010, 2).Put(0x34, 0x40, 1).Put(0x40, 0x4009, 2);  // Points at itself.
  const PciDescription pci = DescribePci(c.bytes(), {});
  EXPECT_EQ(pci.json["capabilities"].size(), 48u);
  const PciDescription tiny = DescribePci(std::vector<std::byte>(16), {});
  EXPECT_EQ(tiny.json["capabilities"].size(), 0u);
}

TEST(PciFormatTest, SizesAreLspcis) {
  EXPECT_EQ(FormatSize(8), "8");
  EXPECT_EQ(FormatSize(4096), "4K");
  EXPECT_EQ(FormatSize(16u << 20), "16M");
  EXPECT_EQ(FormatSize(8ull << 30), "8G");
}

TEST(ProbeScriptTest, LinesSplitIntoWordsAndDropComments) {
  EXPECT_EQ(ProbeSession::SplitLine("  read config 0x0\t4 # the id"),
            (std::vector<std::string>{"read", "config", "0x0", "4"}));
  EXPECT_TRUE(ProbeSession::SplitLine("# only a comment").empty());
  EXPECT_TRUE(ProbeSession::SplitLine("").empty());
}

TEST(ProbeScriptTest, ErrorsNameTheCommandAndTheErrno) {
  EXPECT_EQ(ProbeSession::FormatError("read", Error{EINVAL, "region 9"}),
            "read: region 9: Invalid argument (EINVAL)");
  EXPECT_EQ(ProbeSession::FormatError("read", Error{kUsageError, "usage: read REGION OFFSET"}),
            "read: usage: read REGION OFFSET");
}

}  // namespace
}  // namespace umdev::probe
