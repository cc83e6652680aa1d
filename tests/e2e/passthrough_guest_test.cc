// Real kernel VFIO, no hardware: a Linux guest (Debian trixie's kernel
// under TCG) with QEMU's intel-iommu and three of QEMU's edu devices, one on
// the root bus and two behind a PCIe-to-PCI bridge (one IOMMU group), runs
// the passthrough driver's kernel layer against them (edu_kernel_test,
// carried into the guest with its libraries). The guest binds the devices
// the way `umdevctl passthrough bind` will: driver_override, then
// drivers_probe.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <iostream>

#include "e2e/guest_shell.h"
#include "e2e/qemu_guest.h"
#include "e2e/qemu_qtest.h"
#include "umdev/common/scope_exit.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

constexpr const char* kEdu = "0000:00:05.0";
// Behind the bridge at 00:06.0, whose secondary bus is 01.
constexpr const char* kPeerA = "0000:01:01.0";
constexpr const char* kPeerB = "0000:01:02.0";
constexpr seconds kBootTimeout{180};
constexpr seconds kCommandTimeout{120};

constexpr const char* kSetup = R"SH(for m in /modules/*.ko; do insmod "$m" || exit 1; done
[ -e /dev/vfio/vfio ] || { echo "no /dev/vfio/vfio"; exit 1; })SH";

// Binds |address| to |driver| as driverctl does.
std::string Bind(const std::string& address, const std::string& driver) {
  return fmt::format(
      "D=/sys/bus/pci/devices/{0}; if [ -e $D/driver ]; then echo {0} > $D/driver/unbind; fi; "
      "echo {1} > $D/driver_override && echo {0} > /sys/bus/pci/drivers_probe && "
      "[ $(basename $(readlink $D/driver)) = {1} ]",
      address, driver);
}

std::string KernelTest(const std::string& filter) {
  return fmt::format(
      "UMDEV_EDU_DEVICE={} UMDEV_EDU_PEERS={},{} edu_kernel_test --gtest_color=no "
      "--gtest_filter='{}'",
      kEdu, kPeerA, kPeerB, filter);
}

TEST(PassthroughGuestTest, TheKernelLayerDrivesEduThroughRealVfio) {
  const auto root = QemuRootFromEnvironment();
  if (!root) {
    GTEST_SKIP() << "UMDEV_QEMU_ROOT is not set: run 'make test', which builds the QEMU "
                    "root (scripts/qemu-root) and points the tests at it";
  }
  auto scratch = RootScratchDir::Create(*root);
  ASSERT_TRUE(scratch.has_value()) << scratch.error().Describe();
  auto kernel = FindRootKernel(*root);
  ASSERT_TRUE(kernel.has_value()) << kernel.error().Describe();
  auto files =
      RootKernelModules(*root, scratch->path(), {"vfio_pci", "vfio_iommu_type1", "uio_pci_generic"});
  ASSERT_TRUE(files.has_value()) << files.error().Describe();
  auto programs = HostProgramFiles({EDU_KERNEL_TEST});
  ASSERT_TRUE(programs.has_value()) << programs.error().Describe();
  files->insert(files->end(), programs->begin(), programs->end());
  auto initramfs =
      BuildBusyboxInitramfs(*root, scratch->path(), GuestShell::InitScript(kSetup), *files);
  ASSERT_TRUE(initramfs.has_value()) << initramfs.error().Describe();
  auto kernel_in_root = PathInsideRoot(*root, *kernel);
  auto initramfs_in_root = PathInsideRoot(*root, *initramfs);
  ASSERT_TRUE(kernel_in_root && initramfs_in_root);

  const auto started = std::chrono::steady_clock::now();
  // clang-format off
  auto guest = QemuGuest::Start(*root, {
      "-machine", "q35", "-accel", "tcg", "-m", "512", "-smp", "1", "-nodefaults",
      "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
      "-device", "intel-iommu",
      "-kernel", *kernel_in_root, "-initrd", *initramfs_in_root,
      "-append", "console=ttyS0 quiet intel_iommu=on panic=-1",
      "-device", "edu,addr=05.0",
      "-device", "pcie-pci-bridge,id=bridge,addr=06.0",
      "-device", "edu,bus=bridge,addr=01.0",
      "-device", "edu,bus=bridge,addr=02.0"});
  // clang-format on
  ASSERT_TRUE(guest.has_value()) << guest.error().Describe();
  const ScopeExit console_on_failure([&] {
    if (::testing::Test::HasFailure()) std::cerr << "guest console:\n" << guest->console() << "\n";
  });
  GuestShell shell(*guest);
  auto ready = shell.WaitReady(kBootTimeout);
  ASSERT_TRUE(ready.has_value()) << ready.error().Describe();

  // The three functions, and the bridge's two sharing a group.
  auto groups = shell.Run(
      fmt::format("for d in {} {} {}; do echo $d $(cat /sys/bus/pci/devices/$d/vendor)"
                  ":$(cat /sys/bus/pci/devices/$d/device) group "
                  "$(basename $(readlink /sys/bus/pci/devices/$d/iommu_group)); done",
                  kEdu, kPeerA, kPeerB),
      kCommandTimeout);
  ASSERT_TRUE(groups.has_value()) << groups.error().Describe();
  ASSERT_EQ(groups->status, 0) << groups->output;
  std::cout << groups->output;
  EXPECT_NE(groups->output.find(fmt::format("{} 0x1234:0x11e8", kEdu)), std::string::npos)
      << groups->output;

  // A group with a member on a host driver that does DMA (uio_pci_generic)
  // is not viable. (pci-stub would not do: it declares that it does no DMA,
  // and the kernel counts the group viable with it.)
  for (const auto& [address, driver] :
       {std::pair{kEdu, "vfio-pci"}, {kPeerA, "vfio-pci"}, {kPeerB, "uio_pci_generic"}}) {
    auto bound = shell.Run(Bind(address, driver), kCommandTimeout);
    ASSERT_TRUE(bound.has_value()) << bound.error().Describe();
    ASSERT_EQ(bound->status, 0) << address << " to " << driver << ": " << bound->output;
  }
  auto not_viable = shell.Run(KernelTest("*SharedGroup*"), kCommandTimeout);
  ASSERT_TRUE(not_viable.has_value());
  EXPECT_NE(not_viable->status, 0) << not_viable->output;
  EXPECT_NE(not_viable->output.find(fmt::format("{} (uio_pci_generic) still bound", kPeerB)),
            std::string::npos)
      << not_viable->output;

  // Everything bound to vfio-pci: the whole suite passes.
  auto rebound = shell.Run(Bind(kPeerB, "vfio-pci"), kCommandTimeout);
  ASSERT_TRUE(rebound.has_value() && rebound->status == 0) << (rebound ? rebound->output : "");
  auto suite = shell.Run(KernelTest("*"), kCommandTimeout);
  ASSERT_TRUE(suite.has_value()) << suite.error().Describe();
  std::cout << suite->output;
  EXPECT_EQ(suite->status, 0) << suite->output;
  EXPECT_NE(suite->output.find("[  PASSED  ] 6 tests"), std::string::npos) << suite->output;
  EXPECT_EQ(suite->output.find("SKIPPED"), std::string::npos) << suite->output;

  ASSERT_TRUE(guest->Send("poweroff -f\n").has_value());
  auto status = guest->WaitExit(seconds(60));
  ASSERT_TRUE(status.has_value()) << status.error().Describe();
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::cout << fmt::format("guest boot and kernel suite took {:.1f} s\n", took);
  ::testing::Test::RecordProperty("guest_seconds", fmt::format("{:.1f}", took));
}

}  // namespace
}  // namespace umdev::test
