// A real QEMU (qtest accel) started with -uuid and -name attaches to a
// device of a real umdevd: the device shows the VM through umdevctl attr
// and list -v while open and forgets it when QEMU exits; a device bound to
// another VM's UUID refuses this QEMU (EPERM) and qemu-args prints the
// -uuid that it admits.
#include <gtest/gtest.h>

#include <thread>

#include "e2e/qemu_qtest.h"
#include "e2e/umdevd_process.h"
#include "umdev/common/uuid.h"

namespace umdev::test {
namespace {

constexpr const char* kVmUuid = "0f0e0d0c-0b0a-4908-8706-050403020100";
constexpr const char* kOtherUuid = "11112222-3333-4444-8555-666677778888";

class VmAssociationQemuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto root = QemuRootFromEnvironment();
    if (!root) GTEST_SKIP() << "UMDEV_QEMU_ROOT is not set: run 'make test'";
    root_ = *root;
    auto scratch = RootScratchDir::Create(root_);
    ASSERT_TRUE(scratch.has_value()) << scratch.error().Describe();
    scratch_.emplace(std::move(*scratch));
    auto daemon = UmdevdProcess::Start(UMDEVD_TESTBED, scratch_->path(),
                                       R"({"parents":[{"driver":"test-pci","name":"pci0"}]})");
    ASSERT_TRUE(daemon.has_value()) << daemon.error().Describe();
    daemon_.emplace(std::move(*daemon));
    uuid_ = Uuid::Generate().ToString();
    ASSERT_TRUE(daemon_->Ctl(UMDEVCTL, "start -p pci0 -t test_pci-basic -u " + uuid_));
  }

  void TearDown() override {
    if (daemon_ && HasFailure()) std::cerr << "umdevd log:\n" << daemon_->Log();
  }

  Result<QemuQtest> StartQemu(const std::string& vm_uuid) {
    QemuQtestOptions options;
    options.root = root_;
    options.devices.push_back(VfioUserPciDevice{daemon_->SocketOf(uuid_), "04.0", "dev0"});
    options.extra_args = {"-uuid", vm_uuid, "-name", "guest=qtest-vm,debug-threads=on"};
    return QemuQtest::Start(std::move(options));
  }

  std::string Ctl(const std::string& args) {
    auto out = daemon_->Ctl(UMDEVCTL, args);
    EXPECT_TRUE(out.has_value()) << out.error().Describe();
    return out.value_or("");
  }

  std::filesystem::path root_;
  std::optional<RootScratchDir> scratch_;
  std::optional<UmdevdProcess> daemon_;
  std::string uuid_;
};

TEST_F(VmAssociationQemuTest, TheDeviceShowsTheQemuThatOpenedItUntilItExits) {
  EXPECT_EQ(Ctl("attr -u " + uuid_ + " -n vm_accel"), "\n");
  auto qemu = StartQemu(kVmUuid);
  ASSERT_TRUE(qemu.has_value()) << qemu.error().Describe();
  const std::string attrs = Ctl("attr -u " + uuid_);
  EXPECT_NE(attrs.find(std::string("vm_uuid=") + kVmUuid + "\n"), std::string::npos) << attrs;
  EXPECT_NE(attrs.find("vm_name=qtest-vm\n"), std::string::npos) << attrs;
  EXPECT_NE(attrs.find("vm_pid=" + std::to_string(qemu->pid()) + "\n"), std::string::npos)
      << attrs;
  EXPECT_NE(attrs.find("vm_accel=qtest\n"), std::string::npos) << attrs;
  const std::string listed = Ctl("list -v");
  EXPECT_NE(listed.find("  VM: qtest-vm (pid " + std::to_string(qemu->pid()) +
                        ", accel qtest, uuid " + kVmUuid + ")\n"),
            std::string::npos)
      << listed;
  EXPECT_NE(daemon_->Log().find("client attached: qtest-vm (pid"), std::string::npos);
  ASSERT_TRUE(qemu->Quit().has_value());
  std::string accel = "?";
  for (int i = 0; i < 200 && accel != "\n"; ++i) {
    accel = Ctl("attr -u " + uuid_ + " -n vm_accel");
    if (accel != "\n") std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(accel, "\n");
  EXPECT_EQ(Ctl("list -v").find("VM:"), std::string::npos);
}

TEST_F(VmAssociationQemuTest, ABoundDeviceRefusesAnotherVmAndQemuArgsNamesItsUuid) {
  Ctl("attr -u " + uuid_ + " -n bound_vm_uuid -v " + kOtherUuid);
  EXPECT_EQ(Ctl("qemu-args " + uuid_).rfind(std::string("-uuid ") + kOtherUuid + " \\\n", 0), 0u);
  auto refused = StartQemu(kVmUuid);
  ASSERT_FALSE(refused.has_value()) << "QEMU attached to a device bound to another VM";
  EXPECT_NE(daemon_->Log().find(std::string("bound to the VM with UUID ") + kOtherUuid),
            std::string::npos)
      << daemon_->Log();
  auto admitted = StartQemu(kOtherUuid);
  ASSERT_TRUE(admitted.has_value()) << admitted.error().Describe();
  EXPECT_EQ(Ctl("attr -u " + uuid_ + " -n vm_uuid"), std::string(kOtherUuid) + "\n");
}

}  // namespace
}  // namespace umdev::test
