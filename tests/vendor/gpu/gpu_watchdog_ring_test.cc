// The dispatch watchdog as a guest sees it: a ring DISPATCH of a kernel that
// never ends fails with ERROR_CODE ETIMEDOUT and the error interrupt, while
// another instance on the same parent keeps completing FENCE rounds, and the
// runaway's own ring works again after ERROR_CLEAR.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "gpu_tenant_test_util.h"
#include "vulkan_test_kernels.h"

namespace umdev::vendor::gpu::testing {
namespace {

// Runaway tenant's slice layout, above the 64 KiB that RunRound fills.
constexpr uint64_t kModule = 0x20000;
constexpr uint64_t kName = 0x28000;
constexpr uint64_t kArgs = 0x28100;
constexpr uint64_t kState = 0x30000;

// A DISPATCH of SpinForever(state), its module, name and arguments put in
// |t|'s slice through BAR2 as a guest would. |one_group|: a grid of one
// invocation, which ends at once when the flag is already set.
Desc LoadRunaway(Tenant& t, uint64_t state = kState, bool one_group = false) {
  DispatchCommand spin = SpinForever(state);
  if (one_group) spin.groups_x = spin.groups_y = spin.groups_z = 1;
  t.PutSlice(kModule, std::as_bytes(spin.spirv));
  const std::string name = spin.entry_point;
  t.PutSlice(kName, std::as_bytes(std::span(name.c_str(), name.size() + 1)));
  std::vector<std::byte> args(kArgsHeaderSize + kArgsBindingSize);
  const uint32_t header[6] = {spin.groups_x, spin.groups_y, spin.groups_z, 1, 0, 0};
  std::memcpy(args.data(), header, sizeof(header));
  const uint32_t binding = 0;
  const uint64_t offset = state, size = 16;
  std::memcpy(args.data() + kArgsHeaderSize, &binding, 4);
  std::memcpy(args.data() + kArgsHeaderSize + 8, &offset, 8);
  std::memcpy(args.data() + kArgsHeaderSize + 16, &size, 8);
  t.PutSlice(kArgs, args);
  return Dispatch(kModule, static_cast<uint32_t>(spin.spirv.size_bytes()), kName, kArgs);
}

TEST(GpuWatchdogRingTest, RunawayDispatchTimesOutWhileAnotherInstanceKeepsRunning) {
  const int index = PickTestDevice();
  if (index < 0) GTEST_SKIP() << kNoVulkanMessage;
  auto parent = GpuParent::Create(GpuParentOptions{
      .parent_name = "gpu-test",
      .engine = EngineKind::kVulkan,
      .device_index = static_cast<uint32_t>(index),
      .memory = kTenantParentMemory,
      .dispatch_timeout = kTestDispatchTimeout});
  ASSERT_TRUE(parent.has_value()) << parent.error().Describe();
  Tenant runaway(**parent, "1of2");
  Tenant steady(**parent, "1of4");
  ASSERT_TRUE(runaway.ok() && steady.ok());

  Efd fence, error;
  std::vector<UniqueFd> fds;
  fds.push_back(fence.Dup());
  fds.push_back(error.Dup());
  IrqSet set{.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
             .index = VFIO_PCI_MSIX_IRQ_INDEX, .start = 0, .count = 2};
  set.fds = std::move(fds);
  ASSERT_TRUE(runaway.device().SetIrqs(set).has_value());

  const Desc dispatch = LoadRunaway(runaway);
  runaway.EnableQueue();
  steady.EnableQueue();
  ASSERT_TRUE(steady.RunRound(1));

  std::atomic<bool> error_seen{false};
  std::atomic<bool> stop{false};
  std::atomic<int> rounds_after{0};
  std::atomic<bool> round_failed{false};
  std::thread steady_thread([&] {
    for (uint32_t value = 2; !stop.load(); ++value) {
      const bool after = error_seen.load();
      if (!steady.RunRound(value)) {
        round_failed = true;
        return;
      }
      if (after) ++rounds_after;
    }
  });

  runaway.Push(dispatch);
  runaway.Ring();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (runaway.Reg(kRegErrorCode) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  error_seen = true;
  // Let the abandoned grid drain (on llvmpipe; see ReleaseSpin).
  const uint32_t flag = 1;
  runaway.PutSlice(kState, std::as_bytes(std::span(&flag, 1)));
  EXPECT_EQ(runaway.Reg(kRegErrorCode), static_cast<uint32_t>(ETIMEDOUT));
  EXPECT_NE(runaway.Reg(kRegIntStatus) & kIntError, 0u);
  EXPECT_EQ(error.Take(), 1u);
  EXPECT_EQ((*parent)->engine()->device_resets(), 1u);

  while (rounds_after.load() < 3 && !round_failed.load() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stop = true;
  steady_thread.join();
  EXPECT_FALSE(round_failed.load());
  EXPECT_GE(rounds_after.load(), 3);

  // The runaway's instance skips the failed entry and runs again.
  runaway.SetReg(kRegIntStatus, kIntError);
  runaway.SetReg(kRegErrorClear, 1);
  EXPECT_TRUE(runaway.RunRound(7));
  EXPECT_TRUE(steady.RunRound(1000));
}

// Waits (bounded) for |t|'s ring to stop on an error and returns the code.
uint32_t AwaitError(Tenant& t) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (t.Reg(kRegErrorCode) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return t.Reg(kRegErrorCode);
}

// Every runaway costs the whole parent a device reset, so one tenant gets
// GpuDevice::kMaxRunawayKernels of them: then its DISPATCH is refused with
// EIO, without a reset, while its other commands and the other tenant run
// on; the VMM closing the device (a new tenant) clears the record.
TEST(GpuWatchdogRingTest, ATenantPastItsRunawayLimitLosesDispatchUntilClosed) {
  const int index = PickTestDevice();
  if (index < 0) GTEST_SKIP() << kNoVulkanMessage;
  auto parent = GpuParent::Create(GpuParentOptions{
      .parent_name = "gpu-test",
      .engine = EngineKind::kVulkan,
      .device_index = static_cast<uint32_t>(index),
      .memory = kTenantParentMemory,
      .dispatch_timeout = kTestDispatchTimeout});
  ASSERT_TRUE(parent.has_value()) << parent.error().Describe();
  Tenant runaway(**parent, "1of2");
  Tenant steady(**parent, "1of4");
  ASSERT_TRUE(runaway.ok() && steady.ok());
  runaway.EnableQueue();
  steady.EnableQueue();
  const uint32_t released = 1;
  for (uint32_t n = 1; n <= GpuDevice::kMaxRunawayKernels; ++n) {
    const uint64_t state = kState + 0x1000 * n;  // Each grid its own flag.
    runaway.Push(LoadRunaway(runaway, state));
    runaway.Ring();
    EXPECT_EQ(AwaitError(runaway), static_cast<uint32_t>(ETIMEDOUT));
    runaway.PutSlice(state, std::as_bytes(std::span(&released, 1)));  // Drain it.
    EXPECT_EQ(runaway.device().ReadAttribute("timeouts").value_or(""), std::to_string(n));
    runaway.SetReg(kRegErrorClear, 1);
  }
  EXPECT_EQ((*parent)->engine()->device_resets(), GpuDevice::kMaxRunawayKernels);

  // A kernel that would end at once is refused now, and costs no reset.
  const uint64_t done_state = kState + 0x8000;
  runaway.PutSlice(done_state, std::as_bytes(std::span(&released, 1)));
  runaway.Push(LoadRunaway(runaway, done_state, true));
  runaway.Ring();
  EXPECT_EQ(AwaitError(runaway), static_cast<uint32_t>(EIO));
  EXPECT_EQ((*parent)->engine()->device_resets(), GpuDevice::kMaxRunawayKernels);
  runaway.SetReg(kRegErrorClear, 1);
  EXPECT_TRUE(runaway.RunRound(11));  // FILL, COPY and FENCE still run.
  EXPECT_TRUE(steady.RunRound(12));

  // A new tenant of the same instance starts clean.
  runaway.device().Close();
  EXPECT_EQ(runaway.device().ReadAttribute("timeouts").value_or(""), "0");
  runaway.EnableQueue();
  runaway.PutSlice(done_state, std::as_bytes(std::span(&released, 1)));
  runaway.Push(LoadRunaway(runaway, done_state, true));
  runaway.Push(Fence(kDataIova + 0x200, 13, false));
  runaway.Ring();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (runaway.Reg64(kRegFenceDone) != 13 && runaway.Reg(kRegErrorCode) == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(runaway.Reg(kRegErrorCode), 0u);
  EXPECT_EQ(runaway.Reg64(kRegFenceDone), 13u);
}

}  // namespace
}  // namespace umdev::vendor::gpu::testing
