// Two Linux guests (Debian trixie's kernel under QEMU TCG) share one gpu
// parent of a real umdevd: each gets a slice (gpu-1of2 and gpu-1of4 under
// fixed_share) behind QEMU's intel-iommu, binds it to the guest kernel's
// vfio-pci and programs it with umdev-gpu. The test drives both guests
// over their consoles (GuestShell): refusals before binding, the self test,
// both saturating the parent at once (busy_ns shares 2:1), one guest's
// faults while the other computes, and a reboot that leaves nothing of the
// slice's memory behind.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "e2e/guest_shell.h"
#include "e2e/qemu_guest.h"
#include "e2e/qemu_qtest.h"
#include "e2e/umdevd_process.h"
#include "umdev/common/scope_exit.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

constexpr const char* kHalf = "8d0c5d1e-3b7a-4c2e-9f10-2a6b4c8d0e11";
constexpr const char* kQuarter = "8d0c5d1e-3b7a-4c2e-9f10-2a6b4c8d0e12";
constexpr const char* kAddress = "0000:00:04.0";
// TCG on two cores: two guests boot at once in well under a minute; this
// bounds a hang.
constexpr seconds kBootTimeout{240};
constexpr seconds kCommandTimeout{120};
// The saturating workload: reductions of 1 Mi values, 16 per fence: a few
// ms of device time per fence, against which the guest's own time between
// fences (TCG) is small, so each guest asks for more than its share.
constexpr const char* kStress = "stress --ms 15000 --elements 1048576 --batch 16";
constexpr milliseconds kShareWindow{4000};
// Written through BAR2 before a reboot, looked for after it.
constexpr uint32_t kSecret = 0x5ec2e7a1;

// The guest's /init setup: the VFIO modules (vfio, type1, vfio-pci).
constexpr const char* kSetup = R"SH(for m in /modules/*.ko; do insmod "$m" || exit 1; done
[ -e /dev/vfio/vfio ] || { echo "no /dev/vfio/vfio"; exit 1; })SH";

std::string Gpu(const std::string& command) {
  return fmt::format("umdev-gpu --device {} {}", kAddress, command);
}

// The device taken from its driver (vfio-pci, if bound) and enabled with
// none (sysfs 'enable' turns memory decoding on), and BAR2's physical
// address in $B2: what busybox devmem reads and writes the slice with.
std::string Bar2Shell() {
  return fmt::format("D=/sys/bus/pci/devices/{0}; if [ -e $D/driver ]; then echo {0} > "
                     "$D/driver/unbind; fi; echo 1 > $D/enable && "
                     "set -- $(sed -n 3p $D/resource) && B2=$1",
                     kAddress);
}

class GpuLinuxGuestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto root = QemuRootFromEnvironment();
    if (!root) {
      GTEST_SKIP() << "UMDEV_QEMU_ROOT is not set: run 'make test', which builds the QEMU "
                      "root (scripts/qemu-root) and points the tests at it";
    }
    root_ = *root;
    auto scratch = RootScratchDir::Create(root_);
    ASSERT_TRUE(scratch.has_value()) << scratch.error().Describe();
    scratch_.emplace(std::move(*scratch));
    auto daemon = UmdevdProcess::Start(
        UMDEVD, scratch_->path(),
        R"({"parents":[{"driver":"gpu","name":"gpu0","engine":"cpu","memory":"64M",)"
        R"("scheduler":{"policy":"fixed_share","time_slice_us":2000}}]})");
    ASSERT_TRUE(daemon.has_value()) << daemon.error().Describe();
    daemon_.emplace(std::move(*daemon));
    for (const auto& [uuid, type] : {std::pair{kHalf, "gpu-1of2"}, {kQuarter, "gpu-1of4"}}) {
      auto started = daemon_->Ctl(UMDEVCTL, fmt::format("start -p gpu0 -t {} -u {}", type, uuid));
      ASSERT_TRUE(started.has_value()) << started.error().Describe();
    }

    auto kernel = FindRootKernel(root_);
    ASSERT_TRUE(kernel.has_value()) << kernel.error().Describe();
    auto modules = RootKernelModules(root_, scratch_->path(), {"vfio_pci", "vfio_iommu_type1"});
    ASSERT_TRUE(modules.has_value()) << modules.error().Describe();
    auto programs = HostProgramFiles({UMDEV_GPU});
    ASSERT_TRUE(programs.has_value()) << programs.error().Describe();
    modules->insert(modules->end(), programs->begin(), programs->end());
    auto initramfs = BuildBusyboxInitramfs(root_, scratch_->path(),
                                           GuestShell::InitScript(kSetup), *modules);
    ASSERT_TRUE(initramfs.has_value()) << initramfs.error().Describe();
    auto kernel_in_root = PathInsideRoot(root_, *kernel);
    auto initramfs_in_root = PathInsideRoot(root_, *initramfs);
    ASSERT_TRUE(kernel_in_root && initramfs_in_root);
    kernel_ = *kernel_in_root;
    initramfs_ = *initramfs_in_root;
  }

  void TearDown() override {
    if (daemon_ && HasFailure()) std::cerr << "umdevd log:\n" << daemon_->Log();
    daemon_.reset();
    scratch_.reset();
  }

  // A guest with |uuid|'s slice at 00:04.0 behind intel-iommu; |reboot|
  // lets a guest reboot instead of QEMU exiting.
  Result<QemuGuest> Boot(const std::string& uuid, bool reboot) {
    UMDEV_ASSIGN_OR_RETURN(const std::string socket,
                           PathInsideRoot(root_, daemon_->SocketOf(uuid)));
    const std::string device = nlohmann::json{{"driver", "vfio-user-pci"},
                                              {"socket", {{"type", "unix"}, {"path", socket}}},
                                              {"addr", "04.0"}}
                                   .dump();
    // clang-format off
    std::vector<std::string> args = {
        "-machine", "q35", "-accel", "tcg", "-m", "512", "-smp", "1", "-nodefaults",
        "-display", "none", "-monitor", "none", "-serial", "stdio",
        "-object", "memory-backend-memfd,id=mem,size=512M,share=on",
        "-machine", "memory-backend=mem",
        // Every guest IOMMU mapping reaches QEMU (caching mode), which turns
        // it into a DMA_MAP to umdevd.
        "-device", "intel-iommu,caching-mode=on",
        "-kernel", kernel_, "-initrd", initramfs_,
        "-append", "console=ttyS0 quiet intel_iommu=on panic=-1",
        "-device", device};
    // clang-format on
    if (!reboot) args.push_back("-no-reboot");
    return QemuGuest::Start(root_, args);
  }

  uint64_t Attribute(const std::string& uuid, const std::string& name) {
    auto value = daemon_->Ctl(UMDEVCTL, fmt::format("attr -u {} -n {}", uuid, name));
    EXPECT_TRUE(value.has_value()) << value.error().Describe();
    return value.has_value() ? std::stoull(*value) : 0;
  }

  fs::path root_;
  std::optional<RootScratchDir> scratch_;
  std::optional<UmdevdProcess> daemon_;
  std::string kernel_;
  std::string initramfs_;
};

// Runs |command| in each guest at once and waits for both.
std::pair<GuestCommandResult, GuestCommandResult> RunBoth(GuestShell& a, const std::string& in_a,
                                                          GuestShell& b, const std::string& in_b) {
  auto id_a = a.Start(in_a);
  auto id_b = b.Start(in_b);
  EXPECT_TRUE(id_a.has_value() && id_b.has_value());
  if (!id_a || !id_b) return {};
  auto done_a = a.Wait(*id_a, kCommandTimeout);
  auto done_b = b.Wait(*id_b, kCommandTimeout);
  EXPECT_TRUE(done_a.has_value()) << done_a.error().Describe();
  EXPECT_TRUE(done_b.has_value()) << done_b.error().Describe();
  if (!done_a || !done_b) return {};
  return {*done_a, *done_b};
}

TEST_F(GpuLinuxGuestTest, TwoGuestsProgramTheirSlicesAtTheirSharesIsolated) {
  const Clock::time_point started = Clock::now();
  auto half_guest = Boot(kHalf, /*reboot=*/true);
  ASSERT_TRUE(half_guest.has_value()) << half_guest.error().Describe();
  auto quarter_guest = Boot(kQuarter, /*reboot=*/false);
  ASSERT_TRUE(quarter_guest.has_value()) << quarter_guest.error().Describe();
  GuestShell half(*half_guest), quarter(*quarter_guest);
  // Both consoles when anything failed: what the guests said is the story.
  const auto print_consoles = [&] {
    if (!HasFailure()) return;
    std::cerr << "gpu-1of2 guest console:\n" << half_guest->console() << "\ngpu-1of4 guest console:\n"
              << quarter_guest->console() << "\n";
  };
  const ScopeExit consoles_on_failure(print_consoles);
  {
    auto ready = half.WaitReady(kBootTimeout);
    ASSERT_TRUE(ready.has_value()) << ready.error().Describe();
    ready = quarter.WaitReady(kBootTimeout);
    ASSERT_TRUE(ready.has_value()) << ready.error().Describe();
  }
  const double boot_seconds = std::chrono::duration<double>(Clock::now() - started).count();

  // Before binding: the device is bound to no driver, and umdev-gpu says
  // how to hand it to vfio-pci.
  {
    auto refused = half.Run(Gpu("info"), kCommandTimeout);
    ASSERT_TRUE(refused.has_value()) << refused.error().Describe();
    EXPECT_NE(refused->status, 0);
    EXPECT_NE(refused->output.find("bound to no driver"), std::string::npos) << refused->output;
    EXPECT_NE(refused->output.find("driver_override"), std::string::npos) << refused->output;
  }
  const std::string bind = fmt::format(
      "echo vfio-pci > /sys/bus/pci/devices/{0}/driver_override && echo {0} > "
      "/sys/bus/pci/drivers_probe && readlink /sys/bus/pci/devices/{0}/iommu_group && ls /dev/vfio",
      kAddress);
  {
    auto [a, b] = RunBoth(half, bind, quarter, bind);
    ASSERT_EQ(a.status, 0) << a.output;
    ASSERT_EQ(b.status, 0) << b.output;
  }

  // What each slice is, and the self test in both at once.
  {
    auto [a, b] = RunBoth(half, Gpu("info"), quarter, Gpu("info"));
    ASSERT_EQ(a.status, 0) << a.output;
    EXPECT_NE(a.output.find("32.0 MiB"), std::string::npos) << a.output;
    EXPECT_NE(a.output.find("compute share: 50.0 %"), std::string::npos) << a.output;
    EXPECT_NE(a.output.find("vfio-pci 0000:00:04.0"), std::string::npos) << a.output;
    ASSERT_EQ(b.status, 0) << b.output;
    EXPECT_NE(b.output.find("compute share: 25.0 %"), std::string::npos) << b.output;
  }
  {
    auto [a, b] = RunBoth(half, Gpu("selftest --elements 4096"), quarter,
                          Gpu("selftest --elements 4096"));
    EXPECT_NE(a.output.find("selftest passed"), std::string::npos) << a.output;
    EXPECT_NE(b.output.find("selftest passed"), std::string::npos) << b.output;
    auto polled = half.Run(Gpu("--polling selftest --elements 1024"), kCommandTimeout);
    ASSERT_TRUE(polled.has_value());
    EXPECT_NE(polled->output.find("selftest passed"), std::string::npos) << polled->output;
  }

  // Both saturate the parent at once: the fixed shares hold (2:1).
  {
    const uint64_t half_idle = Attribute(kHalf, "busy_ns");
    const uint64_t quarter_idle = Attribute(kQuarter, "busy_ns");
    auto id_a = half.Start(Gpu(kStress));
    auto id_b = quarter.Start(Gpu(kStress));
    ASSERT_TRUE(id_a && id_b);
    // The window opens once both run (each guest starts its program at its
    // own pace under TCG), then one more second for both to settle.
    const Clock::time_point give_up = Clock::now() + seconds(60);
    while ((Attribute(kHalf, "busy_ns") == half_idle ||
            Attribute(kQuarter, "busy_ns") == quarter_idle) &&
           Clock::now() < give_up) {
      std::this_thread::sleep_for(milliseconds(50));
    }
    std::this_thread::sleep_for(seconds(1));
    const uint64_t half_before = Attribute(kHalf, "busy_ns");
    const uint64_t quarter_before = Attribute(kQuarter, "busy_ns");
    const Clock::time_point window_start = Clock::now();
    std::this_thread::sleep_for(kShareWindow);
    const uint64_t half_busy = Attribute(kHalf, "busy_ns") - half_before;
    const uint64_t quarter_busy = Attribute(kQuarter, "busy_ns") - quarter_before;
    const double window = std::chrono::duration<double>(Clock::now() - window_start).count();
    auto done_a = half.Wait(*id_a, kCommandTimeout);
    auto done_b = quarter.Wait(*id_b, kCommandTimeout);
    ASSERT_TRUE(done_a && done_b);
    EXPECT_EQ(done_a->status, 0) << done_a->output;
    EXPECT_EQ(done_b->status, 0) << done_b->output;
    ASSERT_GT(quarter_busy, 0u);
    const double ratio = static_cast<double>(half_busy) / static_cast<double>(quarter_busy);
    std::cout << fmt::format(
        "shares over {:.2f} s: gpu-1of2 busy {:.3f} s ({:.1f} %), gpu-1of4 busy {:.3f} s "
        "({:.1f} %), ratio {:.3f}\n",
        window, half_busy / 1e9, 100.0 * half_busy / 1e9 / window, quarter_busy / 1e9,
        100.0 * quarter_busy / 1e9 / window, ratio);
    std::cout << "gpu-1of2 guest:\n" << done_a->output << "gpu-1of4 guest:\n" << done_b->output;
    RecordProperty("share_ratio", fmt::format("{:.3f}", ratio));
    EXPECT_NEAR(ratio, 2.0, 0.1) << "within 5 % of 2:1";
  }

  // One guest's faults are its own: the other's self test runs meanwhile,
  // with bigger inputs, and passes.
  {
    const uint64_t quarter_errors = Attribute(kQuarter, "errors");
    auto [a, b] = RunBoth(half, Gpu("selftest --faults --elements 4096"), quarter,
                          Gpu("selftest --elements 65536"));
    EXPECT_EQ(a.status, 0) << a.output;
    EXPECT_NE(a.output.find("out-of-bounds DISPATCH         EFAULT  ok"), std::string::npos)
        << a.output;
    EXPECT_NE(a.output.find("COPY from unmapped guest memory EFAULT  ok"), std::string::npos)
        << a.output;
    EXPECT_EQ(b.status, 0) << b.output;
    EXPECT_NE(b.output.find("selftest passed"), std::string::npos) << b.output;
    EXPECT_GE(Attribute(kHalf, "errors"), 2u);
    EXPECT_EQ(Attribute(kQuarter, "errors"), quarter_errors);
  }

  // A reboot resets the slice: what the first boot wrote is gone in the
  // next, read before anything in that boot could reset the device.
  {
    const std::string write_secret = fmt::format(
        "{0}; devmem $B2 32 {1:#x}; devmem $((B2 + 0x100000)) 32 {1:#x}; "
        "devmem $B2 32; devmem $((B2 + 0x100000)) 32",
        Bar2Shell(), kSecret);
    auto written = half.Run(write_secret, kCommandTimeout);
    ASSERT_TRUE(written.has_value()) << written.error().Describe();
    ASSERT_EQ(written->status, 0) << written->output;
    const std::string secret_text = fmt::format("{:#010X}", kSecret).replace(1, 1, "x");
    ASSERT_NE(written->output.find(secret_text), std::string::npos)
        << "devmem reaches the slice: " << written->output;
    ASSERT_TRUE(half.Start("reboot -f").has_value());
    auto ready = half.WaitReady(kBootTimeout);
    ASSERT_TRUE(ready.has_value()) << ready.error().Describe();
    auto after = half.Run(fmt::format("{}; devmem $B2 32; devmem $((B2 + 0x100000)) 32",
                                      Bar2Shell()),
                          kCommandTimeout);
    ASSERT_TRUE(after.has_value()) << after.error().Describe();
    EXPECT_EQ(after->status, 0) << after->output;
    EXPECT_EQ(after->output.find(secret_text), std::string::npos) << after->output;
    EXPECT_NE(after->output.find("0x00000000\n0x00000000"), std::string::npos) << after->output;
    // And the slice works in the new boot.
    auto again = half.Run(bind + " && " + Gpu("selftest --elements 1024"), kCommandTimeout);
    ASSERT_TRUE(again.has_value());
    EXPECT_NE(again->output.find("selftest passed"), std::string::npos) << again->output;
  }

  for (QemuGuest* guest : {&*half_guest, &*quarter_guest}) {
    ASSERT_TRUE(guest->Send("poweroff -f\n").has_value());
    auto status = guest->WaitExit(seconds(60));
    ASSERT_TRUE(status.has_value()) << status.error().Describe();
  }
  const double seconds_taken = std::chrono::duration<double>(Clock::now() - started).count();
  std::cout << fmt::format("two guests booted in {:.1f} s; the whole test took {:.1f} s\n",
                           boot_seconds, seconds_taken);
  RecordProperty("guest_seconds", fmt::format("{:.1f}", seconds_taken));
  EXPECT_TRUE(daemon_->running());
}

}  // namespace
}  // namespace umdev::test
