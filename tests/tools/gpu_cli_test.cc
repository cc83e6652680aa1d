// The gpu parent in the real umdevd through umdevctl: types with memory and
// compute share, available instances following what is used, statistics
// and scheduler attributes, under a configured scheduler.
#include "cli_fixture.h"

#include <fstream>

namespace umdev::test {
namespace {

constexpr const char* kU1 = "6a8bf4d4-0c8e-4a0b-9d2c-7f1e2d3c4b5a";

class GpuCliTest : public CliFixture {
 protected:
  std::string Binary() const override { return UMDEVD; }
  std::string Config() const override {
    return R"({"parents":[{"driver":"gpu","engine":"cpu","memory":"16M",
                            "scheduler":{"policy":"equal_share","time_slice_us":1000}}]})";
  }
};

TEST_F(GpuCliTest, TypesShowFractionsAndFollowPlacement) {
  const Output types = Ctl("types");
  ASSERT_EQ(types.status, 0) << types.out;
  EXPECT_NE(types.out.find("gpu-cpu\n  gpu-1of1\n    Available instances: 1\n"), std::string::npos)
      << types.out;
  EXPECT_NE(types.out.find("Description: memory=2M, compute_share=12.5%"), std::string::npos)
      << types.out;
  const Output started = Ctl("start -p gpu-cpu -t gpu-1of2 -u " + std::string(kU1));
  ASSERT_EQ(started.status, 0) << started.out;
  const Output after = Ctl("types");
  EXPECT_NE(after.out.find("gpu-1of1\n    Available instances: 0\n"), std::string::npos)
      << after.out;
  EXPECT_NE(after.out.find("gpu-1of8\n    Available instances: 4\n"), std::string::npos)
      << after.out;
  EXPECT_EQ(Ctl("attr -u " + std::string(kU1)).out,
            "vm_uuid=\nvm_name=\nvm_pid=\nvm_accel=\nbound_vm_uuid=\nbusy_poll_us=0\n"
            "migration/state=RUNNING\nmigration/bytes_saved=0\nmigration/bytes_loaded=0\n"
            "busy_ns=0\ncommands=0\nbytes=0\nerrors=0\ntimeouts=0\npreempted=0\n"
            "yielded=0\nthrottled=0\n");
  ASSERT_EQ(Ctl("stop -u " + std::string(kU1)).status, 0);
  EXPECT_NE(Ctl("types").out.find("gpu-1of1\n    Available instances: 1\n"), std::string::npos);
}

TEST_F(GpuCliTest, TheParentShowsItsEngineSchedulerAndMemoryLeft) {
  const std::string all = Ctl("attr -p gpu-cpu").out;
  // Nothing polled yet; the thread count is the host's.
  EXPECT_EQ(all.rfind("doorbell_polling_ns=0\ndoorbell_rings=0\ndoorbell_spin_us=200\n"
                      "engine=cpu (tbb, ",
                      0),
            0u)
      << all;
  EXPECT_NE(all.find(")\nmemory_free=16777216\nmemory_total=16777216\n"
                     "scheduler_policy=equal_share\ntime_slice_us=1000\n"),
            std::string::npos)
      << all;
  ASSERT_EQ(Ctl("start -p gpu-cpu -t gpu-1of4 -u " + std::string(kU1)).status, 0);
  EXPECT_EQ(Ctl("attr -p gpu-cpu -n memory_free").out, "12582912\n");
  EXPECT_NE(Ctl("attr -p gpu-cpu -n memory_free -v 1").status, 0) << "read-only";
  EXPECT_NE(Ctl("attr -p nope").out.find("no parent 'nope'"), std::string::npos);
  EXPECT_NE(Ctl("attr -p gpu-cpu -n nope").status, 0);
}

// The VM policies a gpu parent declares for its types (kvmgt's rules).
class GpuVmPolicyCliTest : public CliFixture {
 protected:
  std::string Binary() const override { return UMDEVD; }
  std::string Config() const override {
    return R"({"parents":[{"driver":"gpu","engine":"cpu","memory":"16M",
                            "requires_vm":true,"one_per_vm":true}]})";
  }
};

TEST_F(GpuVmPolicyCliTest, UmdevProbeIsNotAVmAndIsRefusedWithEsrch) {
  ASSERT_EQ(Ctl("start -p gpu-cpu -t gpu-1of2 -u " + std::string(kU1)).status, 0);
  const std::string socket = (dir_ / "state" / "vfio-user" / (std::string(kU1) + ".sock")).string();
  const Output probe = Run(std::string(UMDEV_PROBE) + " --socket " + socket + " info");
  EXPECT_EQ(probe.status, 1) << probe.out;
  EXPECT_NE(probe.out.find("(ESRCH)"), std::string::npos) << probe.out;
  // Refused, the device is as it was: closed, no VM, and the daemon serves on.
  EXPECT_EQ(Ctl("attr -u " + std::string(kU1) + " -n vm_accel").out, "\n");
  EXPECT_EQ(Ctl("list").status, 0);
}

TEST_F(GpuVmPolicyCliTest, BadPolicyValuesAreConfigErrors) {
  std::ofstream(dir_ / "bad.json") << R"({"parents":[{"driver":"gpu","engine":"cpu",
                                          "memory":"16M","requires_vm":"yes"}]})";
  const Output run = Run("timeout 20 " + std::string(UMDEVD) + " --state-dir " +
                         (dir_ / "bad-state").string() + " --config " +
                         (dir_ / "bad.json").string());
  EXPECT_NE(run.status, 0) << run.out;
  EXPECT_NE(run.out.find("requires_vm"), std::string::npos) << run.out;
}

}  // namespace
}  // namespace umdev::test
