// umdevctl libvirt-xml against a running testbed daemon: the fragments and the
// whole domain, escaping, bound VMs and the errors. Real libvirt defines and
// starts what it prints in libvirt_qemu_test.
#include "cli_fixture.h"

namespace {

using umdev::test::Output;
using LibvirtXmlTest = umdev::test::CliFixture;
namespace fs = std::filesystem;

constexpr const char* kU1 = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
constexpr const char* kU2 = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1002";
constexpr const char* kVm = "0a0b0c0d-1e2f-4a5b-8c6d-7e8f90a1b2c3";

// The two <qemu:arg> lines of one device, indented by |indent|.
std::string DeviceArg(const std::string& socket, const std::string& uuid, const std::string& indent) {
  return indent + "<qemu:arg value='-device'/>\n" + indent +
         "<qemu:arg value='{&quot;driver&quot;:&quot;vfio-user-pci&quot;,&quot;id&quot;:&quot;umdev-" +
         uuid + "&quot;,&quot;socket&quot;:{&quot;path&quot;:&quot;" + socket +
         "&quot;,&quot;type&quot;:&quot;unix&quot;}}'/>\n";
}

class LibvirtXmlCliTest : public LibvirtXmlTest {
 protected:
  std::string Socket(const std::string& uuid) const {
    return (dir_ / "state" / "vfio-user" / (uuid + ".sock")).string();
  }
};

TEST_F(LibvirtXmlCliTest, FragmentsNameTheNamespaceTheSharedMemfdAndTheDevice) {
  ASSERT_EQ(Ctl(std::string("start -p parent0 -t test-a -u ") + kU1).status, 0);
  const Output xml = Ctl(std::string("libvirt-xml ") + kU1);
  ASSERT_EQ(xml.status, 0) << xml.out;
  EXPECT_EQ(xml.out,
            "<!-- on the <domain> element: xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' -->\n"
            "<memoryBacking>\n"
            "  <source type='memfd'/>\n"
            "  <access mode='shared'/>\n"
            "</memoryBacking>\n"
            "<qemu:commandline>\n" +
                DeviceArg(Socket(kU1), kU1, "  ") + "</qemu:commandline>\n");
}

TEST_F(LibvirtXmlCliTest, AWholeDomainCarriesEveryDeviceTheMemoryAndTheType) {
  ASSERT_EQ(Ctl(std::string("start -p parent0 -t test-a -u ") + kU1).status, 0);
  ASSERT_EQ(Ctl(std::string("start -p parent1 -t test-b -u ") + kU2).status, 0);
  const Output xml = Ctl(std::string("libvirt-xml ") + kU1 + " " + kU2 +
                         " --domain guest-1 -m 512M --vcpus 2 --virt-type qemu");
  ASSERT_EQ(xml.status, 0) << xml.out;
  EXPECT_EQ(xml.out,
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
            "  <name>guest-1</name>\n"
            "  <memory unit='KiB'>524288</memory>\n"
            "  <vcpu>2</vcpu>\n"
            "  <os>\n"
            "    <type arch='x86_64' machine='q35'>hvm</type>\n"
            "  </os>\n"
            "  <memoryBacking>\n"
            "    <source type='memfd'/>\n"
            "    <access mode='shared'/>\n"
            "  </memoryBacking>\n"
            "  <qemu:commandline>\n" +
                DeviceArg(Socket(kU1), kU1, "    ") + DeviceArg(Socket(kU2), kU2, "    ") +
                "  </qemu:commandline>\n"
                "</domain>\n");
  // The defaults: 4 GiB, one vCPU, KVM.
  const Output defaults = Ctl(std::string("libvirt-xml ") + kU1 + " --domain g");
  EXPECT_NE(defaults.out.find("<domain type='kvm'"), std::string::npos) << defaults.out;
  EXPECT_NE(defaults.out.find("<memory unit='KiB'>4194304</memory>"), std::string::npos);
  EXPECT_NE(defaults.out.find("<vcpu>1</vcpu>"), std::string::npos);
}

TEST_F(LibvirtXmlCliTest, NamesAndPathsAreEscaped) {
  ASSERT_EQ(Ctl(std::string("start -p parent0 -t test-a -u ") + kU1).status, 0);
  // The same state dir through a link whose name needs escaping.
  const fs::path odd = dir_ / "a'&<b";
  fs::create_directory_symlink(dir_ / "state", odd);
  const Output xml = Run(std::string(UMDEVCTL) + " --state-dir \"" + odd.string() +
                         "\" libvirt-xml " + kU1 + " --domain \"x'&<y\"");
  ASSERT_EQ(xml.status, 0) << xml.out;
  EXPECT_NE(xml.out.find("<name>x&apos;&amp;&lt;y</name>"), std::string::npos) << xml.out;
  EXPECT_NE(xml.out.find("a&apos;&amp;&lt;b/vfio-user/"), std::string::npos) << xml.out;
  EXPECT_EQ(xml.out.find("a'&"), std::string::npos) << xml.out;
}

TEST_F(LibvirtXmlCliTest, ASocketDirNamesWhereQemuSeesTheSockets) {
  ASSERT_EQ(Ctl(std::string("start -p parent0 -t test-a -u ") + kU1).status, 0);
  const Output xml = Ctl(std::string("libvirt-xml ") + kU1 + " --socket-dir /var/run/umdev/../umdev");
  ASSERT_EQ(xml.status, 0) << xml.out;
  EXPECT_NE(xml.out.find(DeviceArg(std::string("/var/run/umdev/") + kU1 + ".sock", kU1, "  ")),
            std::string::npos)
      << xml.out;
}

TEST_F(LibvirtXmlCliTest, ABoundDeviceNamesItsVmUuid) {
  ASSERT_EQ(Ctl(std::string("start -p parent0 -t test-a -u ") + kU1 + " --attr bound_vm_uuid=" + kVm)
                .status,
            0);
  ASSERT_EQ(Ctl(std::string("start -p parent1 -t test-b -u ") + kU2).status, 0);
  const Output fragments = Ctl(std::string("libvirt-xml ") + kU1 + " " + kU2);
  ASSERT_EQ(fragments.status, 0) << fragments.out;
  EXPECT_NE(fragments.out.find(std::string("\n<uuid>") + kVm + "</uuid>\n"), std::string::npos)
      << fragments.out;
  const Output domain = Ctl(std::string("libvirt-xml ") + kU2 + " " + kU1 + " --domain g");
  EXPECT_NE(domain.out.find(std::string("  <name>g</name>\n  <uuid>") + kVm + "</uuid>\n"),
            std::string::npos)
      << domain.out;
  // Bound to two VMs: no domain can open both.
  ASSERT_EQ(Ctl(std::string("attr -u ") + kU2 + " -n bound_vm_uuid -v " + kU1).status, 0);
  const Output clash = Ctl(std::string("libvirt-xml ") + kU1 + " " + kU2);
  EXPECT_EQ(clash.status, 1);
  EXPECT_EQ(clash.out, std::string("Error: Mediated device ") + kU2 + " is bound to VM " + kU1 +
                           ", another device to VM " + kVm + ": no one domain can open both\n");
}

TEST_F(LibvirtXmlCliTest, ErrorsNameWhatIsWrong) {
  ASSERT_EQ(Ctl(std::string("start -p parent0 -t test-a -u ") + kU1).status, 0);
  const Output inactive = Ctl(std::string("libvirt-xml ") + kU1 + " " + kU2);
  EXPECT_EQ(inactive.status, 1);
  EXPECT_EQ(inactive.out, std::string("Error: Mediated device ") + kU2 + " is not active\n");
  const Output memory = Ctl(std::string("libvirt-xml ") + kU1 + " --domain g -m 4X");
  EXPECT_EQ(memory.status, 1);
  EXPECT_EQ(memory.out, "Error: Invalid --memory: '4X' is not a size (NUMBER[K|M|G|T])\n");
  const Output small = Ctl(std::string("libvirt-xml ") + kU1 + " --domain g -m 1000K");
  EXPECT_EQ(small.status, 1);
  EXPECT_NE(small.out.find("at least 1M"), std::string::npos) << small.out;
  EXPECT_EQ(Ctl(std::string("libvirt-xml ") + kU1 + " --virt-type xen").status, 2);
  EXPECT_EQ(Ctl(std::string("libvirt-xml ") + kU1 + " --vcpus 0").status, 2);
  const Output twice = Ctl(std::string("libvirt-xml ") + kU1 + " " + kU1);
  EXPECT_EQ(twice.status, 1);
  EXPECT_EQ(twice.out, std::string("Error: Mediated device ") + kU1 + " is named twice\n");
  EXPECT_EQ(Ctl("libvirt-xml not-a-uuid").status, 2);
  EXPECT_EQ(Ctl("libvirt-xml").status, 2);
}

}  // namespace
