// Real kernel VFIO, no hardware: a Linux guest (Debian trixie's kernel
// under TCG) with QEMU's intel-iommu and three of QEMU's edu devices, one on
// the root bus and two behind a PCIe-to-PCI bridge (one IOMMU group), runs
// the passthrough driver's kernel layer against them (edu_kernel_test,
// carried into the guest with its libraries), then umdevd serving the
// root-bus edu and an e1000e over vfio-user and umdev-probe driving them:
// registers (by message and through the BAR the client maps from the
// kernel's fd), DMA, the kernel's dirty log, MSI, INTx unmasked by message
// and by eventfd, MSI-X on the vector asked for, refusals, and a probe
// killed mid-DMA. The guest binds the devices the way driverctl does:
// driver_override, then drivers_probe.
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
// QEMU's e1000e: MSI-X (5 vectors, the table in BAR3), which edu lacks.
constexpr const char* kNic = "0000:00:07.0";
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

constexpr const char* kSocket = "/tmp/umdev/vfio-user/0000:00:05.0.sock";
constexpr const char* kNicSocket = "/tmp/umdev/vfio-user/0000:00:07.0.sock";

// umdev-probe in the guest with |lines| as its script, on one connection.
GuestCommandResult Probe(GuestShell& shell, const std::vector<std::string>& lines,
                         const std::string& flags = "", const char* socket = kSocket) {
  std::string printf_args;
  for (const std::string& line : lines) printf_args += " '" + line + "'";
  auto ran = shell.Run(fmt::format("printf '%s\\n'{} > /tmp/p.probe; umdev-probe --socket {} {} - "
                                   "< /tmp/p.probe",
                                   printf_args, socket, flags),
                       kCommandTimeout);
  EXPECT_TRUE(ran.has_value()) << ran.error().Describe();
  return ran.value_or(GuestCommandResult{});
}

std::string ProbeLog(GuestShell& shell) {
  auto log = shell.Run("cat /tmp/umdevd.log", kCommandTimeout);
  return log.has_value() ? "\numdevd log:\n" + log->output : std::string();
}

TEST(PassthroughGuestTest, EduIsServedThroughRealKernelVfio) {
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
  auto programs = HostProgramFiles({EDU_KERNEL_TEST, UMDEVD, UMDEV_PROBE, UMDEVCTL});
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
      "-device", "edu,bus=bridge,addr=02.0",
      "-device", "e1000e,addr=07.0"});
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

  // umdevctl passthrough bind hands a function to vfio-pci, and refuses one
  // whose group has a member on a host driver that does DMA
  // (uio_pci_generic), naming it: the kernel would not call the group
  // viable. (pci-stub would not do: it declares that it does no DMA, and
  // the kernel counts the group viable with it.)
  const auto run = [&](const std::string& command) {
    auto ran = shell.Run(command, kCommandTimeout);
    EXPECT_TRUE(ran.has_value()) << ran.error().Describe();
    return ran.value_or(GuestCommandResult{});
  };
  GuestCommandResult bound = run(fmt::format("umdevctl passthrough bind {}", kEdu));
  ASSERT_EQ(bound.status, 0) << bound.output;
  EXPECT_NE(bound.output.find(fmt::format("{}: none -> vfio-pci", kEdu)), std::string::npos)
      << bound.output;
  bound = run(Bind(kPeerB, "uio_pci_generic"));
  ASSERT_EQ(bound.status, 0) << bound.output;
  GuestCommandResult refused = run(fmt::format("umdevctl passthrough bind {}", kPeerA));
  EXPECT_EQ(refused.status, 1) << refused.output;
  EXPECT_NE(refused.output.find(fmt::format("{} (uio_pci_generic) still bound", kPeerB)),
            std::string::npos)
      << refused.output;
  // Bound anyway by hand, the kernel's own verdict on the group:
  bound = run(Bind(kPeerA, "vfio-pci"));
  ASSERT_EQ(bound.status, 0) << bound.output;
  auto not_viable = shell.Run(KernelTest("*SharedGroup*"), kCommandTimeout);
  ASSERT_TRUE(not_viable.has_value());
  EXPECT_NE(not_viable->status, 0) << not_viable->output;
  EXPECT_NE(not_viable->output.find(fmt::format("{} (uio_pci_generic) still bound", kPeerB)),
            std::string::npos)
      << not_viable->output;

  // Everything bound to vfio-pci (umdevctl takes the last one from
  // uio_pci_generic): the whole suite passes.
  bound = run(fmt::format("umdevctl passthrough bind {}", kPeerB));
  ASSERT_EQ(bound.status, 0) << bound.output;
  EXPECT_NE(bound.output.find("uio_pci_generic -> vfio-pci"), std::string::npos) << bound.output;
  bound = run(fmt::format("umdevctl passthrough bind {}", kNic));
  ASSERT_EQ(bound.status, 0) << bound.output;
  auto suite = shell.Run(KernelTest("*"), kCommandTimeout);
  ASSERT_TRUE(suite.has_value()) << suite.error().Describe();
  std::cout << suite->output;
  EXPECT_EQ(suite->status, 0) << suite->output;
  EXPECT_NE(suite->output.find("[  PASSED  ] 7 tests"), std::string::npos) << suite->output;
  EXPECT_EQ(suite->output.find("SKIPPED"), std::string::npos) << suite->output;

  // umdevd in the guest serves the root-bus edu over vfio-user; umdev-probe
  // in the guest drives it as QEMU would.
  auto daemon = shell.Run(
      fmt::format("printf '%s' '{{\"parents\":[{{\"driver\":\"passthrough\",\"devices\":"
                  "[\"{0}\",\"{2}\",\"{3}\",\"{4}\"]}}]}}' > /tmp/umdevd.json && (umdevd "
                  "--state-dir /tmp/umdev --config /tmp/umdevd.json > /tmp/umdevd.log 2>&1 &) && "
                  "i=0; while [ ! -S {1} ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done; "
                  "ls -l {1}",
                  kEdu, kSocket, kNic, kPeerA, kPeerB),
      kCommandTimeout);
  ASSERT_TRUE(daemon.has_value()) << daemon.error().Describe();
  ASSERT_EQ(daemon->status, 0) << daemon->output << ProbeLog(shell);
  GuestCommandResult listed = run("umdevctl --state-dir /tmp/umdev passthrough list");
  EXPECT_EQ(listed.status, 0) << listed.output;
  EXPECT_NE(listed.output.find(fmt::format("{} group 1 vfio-pci idle", kEdu)), std::string::npos)
      << listed.output;
  EXPECT_NE(listed.output.find(fmt::format("{} group ", kNic)), std::string::npos) << listed.output;

  // Both functions of the bridge's group are served from one group the
  // daemon holds: while one client has one of them, a client of another
  // process is refused the other (the kernel lets a group be in one
  // container), and gets it once the first has left.
  auto shared = shell.Run(
      fmt::format("printf '%s\\n' 'read 0 0x0 4' 'wait-irq 4 0 --timeout 2000' > /tmp/a.probe; "
                  "(umdev-probe --socket /tmp/umdev/vfio-user/{0}.sock - < /tmp/a.probe > "
                  "/tmp/a.out 2>&1 &); sleep 1; umdev-probe --socket "
                  "/tmp/umdev/vfio-user/{1}.sock read 0 0x0 4; echo refused=$?; sleep 2; "
                  "cat /tmp/a.out; umdev-probe --socket /tmp/umdev/vfio-user/{1}.sock read 0 0x0 4",
                  kPeerA, kPeerB),
      kCommandTimeout);
  ASSERT_TRUE(shared.has_value()) << shared.error().Describe();
  std::cout << "one group, two clients:\n" << shared->output;
  EXPECT_NE(shared->output.find("EBUSY"), std::string::npos) << shared->output << ProbeLog(shell);
  EXPECT_NE(shared->output.find("refused=1"), std::string::npos) << shared->output;
  const size_t first_id = shared->output.find("0x010000ed");
  ASSERT_NE(first_id, std::string::npos) << "the first client read its function";
  EXPECT_NE(shared->output.find("0x010000ed", first_id + 1), std::string::npos)
      << "the second client got the other function after the first left: " << shared->output;
  refused = run(fmt::format("umdevctl --state-dir /tmp/umdev passthrough unbind {}", kEdu));
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.output.find("umdevd serves"), std::string::npos) << refused.output;
  // Registers, DMA both ways at an IOVA the real IOMMU translates, and MSI
  // (edu raises it at the end of each DMA and of a factorial).
  auto first = Probe(shell, {"info", "regions", "read 0 0x0 4", "write 0 0x4 0x12345678 4",
                             "read 0 0x4 4", "read 0 0x0 4 --mmap",
                             "write 0 0x4 0xa5a5a5a5 4 --mmap", "read 0 0x4 4 --mmap",
                             "write config 0x4 0x6 2",
                             "map-memory 64K --iova 0x100000",
                             "mem-write 0x100000 de:ad:be:ef:01:02:03:04", "arm-irq 1 0",
                             "write 0 0x80 0x100000 8", "write 0 0x88 0x40000 8",
                             "write 0 0x90 8 8", "write 0 0x98 5 8",
                             "wait-irq 1 0 --timeout 5000", "write 0 0x64 0x100 4",
                             "write 0 0x80 0x40000 8", "write 0 0x88 0x108000 8",
                             "write 0 0x90 8 8", "write 0 0x98 7 8",
                             "wait-irq 1 0 --timeout 5000", "write 0 0x64 0x100 4",
                             "mem-read 0x108000 8", "dirty-log start 0x100000 64K",
                             "dirty-log report 0x100000 64K",
                             "dirty-log report 0x100000 64K --page-size 16K",
                             "dirty-log stop", "write 0 0x20 0x80 4", "write 0 0x8 5 4",
                             "wait-irq 1 0 --timeout 5000", "read 0 0x8 4"});
  std::cout << "probe session 1:\n" << first.output;
  EXPECT_EQ(first.status, 0) << first.output << ProbeLog(shell);
  EXPECT_NE(first.output.find("0x010000ed"), std::string::npos) << "edu's ID";
  EXPECT_NE(first.output.find("0xedcba987"), std::string::npos) << "liveness: the NOT";
  EXPECT_NE(first.output.find("0x010000ed\n0x5a5a5a5a"), std::string::npos)
      << "the same registers through the BAR mapped from the kernel's device fd";
  EXPECT_NE(first.output.find("de ad be ef 01 02 03 04"), std::string::npos)
      << "the bytes came back through the device";
  EXPECT_NE(first.output.find("0x00000078"), std::string::npos) << "5! = 120";
  // The client's DMA logging is its container's VFIO_IOMMU_DIRTY_PAGES:
  // type1 cannot see device writes, so every mapped page reads dirty.
  EXPECT_NE(first.output.find("dirty: 16 of 16 pages of 0x1000 at 0x100000: 0-15"),
            std::string::npos)
      << first.output;
  EXPECT_NE(first.output.find("dirty: 4 of 4 pages of 0x4000 at 0x100000: 0-3"),
            std::string::npos)
      << first.output;

  // INTx in the next session (the last one's MSI was torn down): the
  // kernel masks the line at each interrupt, and the next one comes only
  // after an unmask, by message and then by the eventfd QEMU would hand
  // over as KVM's resamplefd (which goes straight to the kernel). Then the
  // kernel's refusal to reset edu (no FLR, and no bus reset on the root bus).
  auto second = Probe(shell, {"arm-irq 0 0", "write 0 0x60 0x1 4", "wait-irq 0 0 --timeout 5000",
                              "write 0 0x64 0x1 4", "unmask-irq 0 0", "write 0 0x60 0x1 4",
                              "wait-irq 0 0 --timeout 5000", "write 0 0x64 0x1 4",
                              "unmask-irq 0 0 --eventfd", "write 0 0x60 0x1 4",
                              "wait-irq 0 0 --timeout 5000", "write 0 0x64 0x1 4",
                              "unmask-irq 0 0 --eventfd", "write 0 0x60 0x1 4",
                              "wait-irq 0 0 --timeout 5000", "write 0 0x64 0x1 4", "reset"},
                      "--keep-going");
  std::cout << "probe session 2:\n" << second.output;
  EXPECT_EQ(second.output.find("wait-irq:"), std::string::npos) << second.output;
  size_t intx = 0;
  for (size_t at = 0; (at = second.output.find("irq 0 vector 0: 1 interrupt(s)", at)) !=
                      std::string::npos;
       ++at) {
    ++intx;
  }
  EXPECT_EQ(intx, 4u) << second.output;
  EXPECT_NE(second.output.find("reset: device reset: No such device (ENODEV)"), std::string::npos)
      << "edu on the root bus can be reset neither alone nor with its bus";

  // DMA_MAP refusals: guest memory the daemon cannot map, and an overlap.
  auto third = Probe(shell, {"map-memory 4K --iova 0x200000 --no-fd",
                             "map-memory 4K --iova 0x300000", "map-memory 4K --iova 0x300000"},
                     "--keep-going");
  std::cout << "probe session 3:\n" << third.output;
  EXPECT_NE(third.output.find("map-memory: iova 0x200000: Invalid argument (EINVAL)"),
            std::string::npos)
      << third.output;
  EXPECT_NE(ProbeLog(shell).find("memory-backend-memfd,share=on"), std::string::npos)
      << "the reason is in the daemon's log" << ProbeLog(shell);
  EXPECT_NE(third.output.find("EEXIST"), std::string::npos) << third.output;
  // edu could not be reset between those clients: list says so, and the
  // daemon warned as each next client got it.
  listed = run("umdevctl --state-dir /tmp/umdev passthrough list");
  EXPECT_NE(listed.output.find(fmt::format("{} group 1 vfio-pci idle, not reset since its last "
                                           "client",
                                           kEdu)),
            std::string::npos)
      << listed.output;
  EXPECT_NE(ProbeLog(shell).find("a new client gets it without a reset"), std::string::npos)
      << ProbeLog(shell);

  // MSI-X on the e1000e: the BAR with the table is relayed as mappable (the
  // kernel's MSIX_MAPPABLE capability), and an "other" cause routed to
  // vector 3 (IVAR 0xe4) arrives on vector 3's eventfd and not on vector
  // 0's: IMS 0xd0 lets it through, ICS 0xc8 raises it (how many the NIC
  // sends for it is QEMU's business).
  auto nic = Probe(shell, {"regions", "irqs", "write config 0x4 0x6 2", "arm-irq 2 3",
                           "arm-irq 2 0", "write 0 0xe4 0xb0000 4", "write 0 0xd0 0x1000000 4",
                           "write 0 0xc8 0x1000000 4", "wait-irq 2 3 --timeout 5000",
                           "wait-irq 2 0 --timeout 300"},
                   "--keep-going", kNicSocket);
  std::cout << "probe session on the e1000e:\n" << nic.output;
  EXPECT_NE(nic.output.find("msix-mappable"), std::string::npos) << nic.output;
  EXPECT_NE(nic.output.find("IRQ 2 (MSI-X): count 5"), std::string::npos) << nic.output;
  EXPECT_NE(nic.output.find("irq 2 vector 3: "), std::string::npos)
      << nic.output << ProbeLog(shell);
  EXPECT_NE(nic.output.find("irq 2 vector 0: no interrupt within 300 ms"), std::string::npos)
      << nic.output;
  EXPECT_EQ(nic.output.find("arm-irq:"), std::string::npos) << nic.output;

  // A probe killed in the middle of a DMA: nothing stays pinned, and the
  // next probe gets the device.
  auto killed = shell.Run(
      fmt::format("printf '%s\\n' 'map-memory 1M --iova 0x100000' 'write config 0x4 0x6 2' "
                  "'write 0 0x80 0x100000 8' 'write 0 0x88 0x40000 8' 'write 0 0x90 4096 8' "
                  "'write 0 0x98 1 8' 'wait-irq 1 0 --timeout 60000' > /tmp/kill.probe; "
                  "umdev-probe --socket {0} - < /tmp/kill.probe & P=$!; sleep 1; "
                  "umdevctl --state-dir /tmp/umdev passthrough list; "
                  "grep VmLck /proc/$(pidof umdevd)/status; kill -9 $P; sleep 1; "
                  "grep VmLck /proc/$(pidof umdevd)/status",
                  kSocket),
      kCommandTimeout);
  ASSERT_TRUE(killed.has_value());
  std::cout << "killed probe:\n" << killed->output;
  EXPECT_NE(killed->output.find(fmt::format("{} group 1 vfio-pci open by pid", kEdu)),
            std::string::npos)
      << "list names the client: " << killed->output;
  const size_t last_lock = killed->output.rfind("VmLck:");
  ASSERT_NE(last_lock, std::string::npos) << killed->output;
  EXPECT_NE(killed->output.find("VmLck:", 0), last_lock) << "pinned while the probe lived";
  EXPECT_NE(killed->output.find(" 0 kB", last_lock), std::string::npos) << killed->output;
  auto fresh = Probe(shell, {"read 0 0x0 4"});
  EXPECT_EQ(fresh.status, 0) << fresh.output << ProbeLog(shell);
  EXPECT_NE(fresh.output.find("0x010000ed"), std::string::npos);

  // The host wants the device back (vfio-pci's unbind): the kernel's REQ
  // reaches the client's eventfd with no hop through umdevd, the client
  // lets go, and the unbind completes.
  auto request = shell.Run(
      fmt::format("printf '%s\\n' 'arm-irq 4 0' 'wait-irq 4 0 --timeout 30000' > /tmp/req.probe; "
                  "(umdev-probe --socket {0} - < /tmp/req.probe > /tmp/req.out 2>&1 &); sleep 1; "
                  "echo {1} > /sys/bus/pci/drivers/vfio-pci/unbind; cat /tmp/req.out; "
                  "[ -e /sys/bus/pci/devices/{1}/driver ] && echo still-bound || echo released",
                  kSocket, kEdu),
      kCommandTimeout);
  ASSERT_TRUE(request.has_value()) << request.error().Describe();
  std::cout << "device requested back:\n" << request->output;
  EXPECT_NE(request->output.find("irq 4 vector 0: 1 interrupt(s)"), std::string::npos)
      << request->output << ProbeLog(shell);
  EXPECT_NE(request->output.find("released"), std::string::npos) << request->output;

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
