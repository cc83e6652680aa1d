// DeviceIrqs: SET_IRQS semantics per index, INTx automask, and concurrent triggers.
#include "umdev/irq/device_irqs.h"

#include <fcntl.h>

#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "irq_test_util.h"

namespace umdev::irq {
namespace {

using namespace testutil;  // NOLINT: the helpers are these tests' vocabulary.

TEST(DeviceIrqsTest, Info) {
  DeviceIrqs irqs(kCounts);
  EXPECT_EQ(irqs.Info(kIntx).flags,
            VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED);
  EXPECT_EQ(irqs.Info(kIntx).count, 1u);
  EXPECT_EQ(irqs.Info(kMsi).flags, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE);
  EXPECT_EQ(irqs.Info(kMsi).count, 4u);
  EXPECT_EQ(irqs.Info(kMsix).flags,
            VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE | VFIO_IRQ_INFO_MASKABLE);
  EXPECT_EQ(irqs.Info(kMsix).count, 8u);
  EXPECT_EQ(irqs.Info(kErr).flags, VFIO_IRQ_INFO_EVENTFD);
  EXPECT_EQ(irqs.Info(kReq).count, 1u);
  EXPECT_EQ(irqs.Info(VFIO_PCI_NUM_IRQS).count, 0u);
  DeviceIrqs none(IrqCounts{.intx = 0});
  EXPECT_EQ(none.Info(kIntx).count, 0u);
  EXPECT_EQ(none.Info(kErr).flags, 0u);
  IrqSet set = Set(kErr, kNone | kTrigger, 0, 1);
  EXPECT_EQ(Errno(none.SetIrqs(set)), EINVAL);  // Unsupported index.
}

TEST(DeviceIrqsTest, IntxAutomaskPendingAndUnmaskByDataNone) {
  DeviceIrqs irqs(kCounts);
  Efd efd;
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  irqs.Trigger(kIntx, 0);
  EXPECT_EQ(efd.Take(), 1u);
  EXPECT_TRUE(irqs.IsMasked(kIntx, 0));
  irqs.Trigger(kIntx, 0);
  EXPECT_EQ(efd.Take(), 0u);
  EXPECT_TRUE(irqs.Pending(kIntx, 0));
  ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kUnmask, 0, 1))), 0);
  EXPECT_EQ(efd.Take(), 1u);  // The pending interrupt, delivered and masked again.
  EXPECT_FALSE(irqs.Pending(kIntx, 0));
  EXPECT_TRUE(irqs.IsMasked(kIntx, 0));
  ASSERT_EQ(Errno(Apply(irqs, Bools(kIntx, kUnmask, 0, {0}))), 0);  // False: no-op.
  EXPECT_TRUE(irqs.IsMasked(kIntx, 0));
  ASSERT_EQ(Errno(Apply(irqs, Bools(kIntx, kUnmask, 0, {1}))), 0);
  EXPECT_FALSE(irqs.IsMasked(kIntx, 0));
  EXPECT_EQ(efd.Take(), 0u);
  // User mask, then unmask with nothing pending.
  ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kMask, 0, 1))), 0);
  EXPECT_TRUE(irqs.IsMasked(kIntx, 0));
  irqs.Trigger(kIntx, 0);
  EXPECT_EQ(efd.Take(), 0u);
  ASSERT_EQ(Errno(Apply(irqs, Bools(kIntx, kMask, 0, {1}))), 0);
  ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kUnmask, 0, 1))), 0);
  EXPECT_EQ(efd.Take(), 1u);
}

TEST(DeviceIrqsTest, IntxLevelRedeliversOnEveryUnmaskUntilDeasserted) {
  DeviceIrqs irqs(kCounts);
  Efd efd;
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  irqs.SetIntxLevel(true);
  EXPECT_EQ(efd.Take(), 1u);
  EXPECT_TRUE(irqs.IsMasked(kIntx, 0));
  irqs.SetIntxLevel(true);  // Still asserted: no new edge.
  EXPECT_EQ(efd.Take(), 0u);
  EXPECT_FALSE(irqs.Pending(kIntx, 0));
  ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kUnmask, 0, 1))), 0);
  EXPECT_EQ(efd.Take(), 1u);  // The guest's EOI left the line asserted.
  EXPECT_TRUE(irqs.IsMasked(kIntx, 0));
  irqs.UnmaskIntx();
  EXPECT_EQ(efd.Take(), 1u);
  irqs.SetIntxLevel(false);
  ASSERT_EQ(Errno(Apply(irqs, Bools(kIntx, kUnmask, 0, {1}))), 0);
  EXPECT_EQ(efd.Take(), 0u);
  EXPECT_FALSE(irqs.IsMasked(kIntx, 0));
  irqs.SetIntxLevel(true);  // A new edge after the deassert.
  EXPECT_EQ(efd.Take(), 1u);
}

TEST(DeviceIrqsTest, IntxLevelDeassertDropsAPendingInterrupt) {
  DeviceIrqs irqs(kCounts);
  Efd efd;
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kMask, 0, 1))), 0);
  irqs.SetIntxLevel(true);
  EXPECT_TRUE(irqs.Pending(kIntx, 0));
  EXPECT_EQ(efd.Take(), 0u);
  irqs.SetIntxLevel(false);
  EXPECT_FALSE(irqs.Pending(kIntx, 0));
  ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kUnmask, 0, 1))), 0);
  EXPECT_EQ(efd.Take(), 0u);
}

TEST(DeviceIrqsTest, IntxLevelSurvivesDisableAndFiresOnEnable) {
  DeviceIrqs irqs(kCounts);
  Efd efd;
  irqs.SetIntxLevel(true);  // INTx not enabled: nothing to signal yet.
  EXPECT_FALSE(irqs.Pending(kIntx, 0));
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  EXPECT_EQ(efd.Take(), 1u);
  EXPECT_TRUE(irqs.IsMasked(kIntx, 0));
  irqs.DisableAll();
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  EXPECT_EQ(efd.Take(), 1u);
  // Re-assigning the eventfd of an enabled INTx is no new enable.
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  EXPECT_EQ(efd.Take(), 0u);
  irqs.SetIntxLevel(false);
  ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kTrigger, 0, 0))), 0);
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  EXPECT_EQ(efd.Take(), 0u);
}

TEST(DeviceIrqsTest, IntxLevelIsIgnoredInMsiMode) {
  DeviceIrqs irqs(kCounts);
  Efd efd;
  ASSERT_EQ(Errno(Apply(irqs, Fds(kMsi, 0, One(efd.Dup())))), 0);
  irqs.SetIntxLevel(true);
  EXPECT_EQ(efd.Take(), 0u);
  EXPECT_FALSE(irqs.Pending(kIntx, 0));
}

TEST(DeviceIrqsTest, EnabledIndex) {
  DeviceIrqs irqs(kCounts);
  Efd efd;
  EXPECT_EQ(irqs.EnabledIndex(), std::nullopt);
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  EXPECT_EQ(irqs.EnabledIndex(), kIntx);
  irqs.DisableAll();
  ASSERT_EQ(Errno(Apply(irqs, Fds(kMsi, 0, One(efd.Dup())))), 0);
  EXPECT_EQ(irqs.EnabledIndex(), kMsi);
  ASSERT_EQ(Errno(Apply(irqs, Set(kMsi, kNone | kTrigger, 0, 0))), 0);
  EXPECT_EQ(irqs.EnabledIndex(), std::nullopt);
  ASSERT_EQ(Errno(Apply(irqs, Fds(kMsix, 0, One(UniqueFd())))), 0);
  EXPECT_EQ(irqs.EnabledIndex(), kMsix);
  ASSERT_EQ(Errno(Apply(irqs, Fds(kErr, 0, One(efd.Dup())))), 0);
  EXPECT_EQ(irqs.EnabledIndex(), kMsix);  // ERR and REQ are no mode.
}

TEST(DeviceIrqsTest, IntxLoopbackAndDisable) {
  DeviceIrqs irqs(kCounts);
  Efd efd;
  EXPECT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kTrigger, 0, 1))), EINVAL);  // Not enabled.
  EXPECT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kMask, 0, 1))), EINVAL);
  EXPECT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kUnmask, 0, 1))), EINVAL);
  irqs.Trigger(kIntx, 0);  // Dropped: INTx not enabled.
  EXPECT_FALSE(irqs.Pending(kIntx, 0));
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kTrigger, 0, 1))), 0);
  EXPECT_EQ(efd.Take(), 1u);
  EXPECT_FALSE(irqs.IsMasked(kIntx, 0));  // Loopback does not automask.
  ASSERT_EQ(Errno(Apply(irqs, Bools(kIntx, kTrigger, 0, {0}))), 0);
  EXPECT_EQ(efd.Take(), 0u);
  ASSERT_EQ(Errno(Apply(irqs, Bools(kIntx, kTrigger, 0, {1}))), 0);
  EXPECT_EQ(efd.Take(), 1u);
  // Count 0 disables; a second disable is a no-op.
  ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kTrigger, 0, 0))), 0);
  ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kTrigger, 0, 0))), 0);
  irqs.Trigger(kIntx, 0);
  EXPECT_EQ(efd.Take(), 0u);
  // Invalid fd de-assigns (disables) too.
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(UniqueFd())))), 0);
  irqs.Trigger(kIntx, 0);
  EXPECT_EQ(efd.Take(), 0u);
}

TEST(DeviceIrqsTest, UnsupportedCombinationsAreEnotty) {
  DeviceIrqs irqs(kCounts);
  Efd efd;
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  IrqSet mask_fd = Set(kIntx, kEventfd | kMask, 0, 1);
  mask_fd.fds = One(efd.Dup());
  EXPECT_EQ(Errno(Apply(irqs, std::move(mask_fd))), ENOTTY);
  // Resample without a loop.
  IrqSet resample = Set(kIntx, kEventfd | kUnmask, 0, 1);
  resample.fds = One(efd.Dup());
  EXPECT_EQ(Errno(Apply(irqs, std::move(resample))), ENOTTY);
  for (uint32_t index : {kMsi, kErr, kReq}) {
    EXPECT_EQ(Errno(Apply(irqs, Set(index, kNone | kMask, 0, 1))), ENOTTY) << index;
    EXPECT_EQ(Errno(Apply(irqs, Bools(index, kUnmask, 0, {1}))), ENOTTY) << index;
  }
}

TEST(DeviceIrqsTest, IntxUnmaskThroughResampleEventfd) {
  auto loop = VirqfdLoop::Create();
  ASSERT_TRUE(loop.has_value());
  ASSERT_TRUE(loop->Start().has_value());
  DeviceIrqs irqs(kCounts, &*loop);
  Efd trigger;
  Efd resample;
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(trigger.Dup())))), 0);
  IrqSet set = Set(kIntx, kEventfd | kUnmask, 0, 1);
  set.fds = One(resample.Dup());
  ASSERT_EQ(Errno(Apply(irqs, std::move(set))), 0);
  irqs.Trigger(kIntx, 0);
  irqs.Trigger(kIntx, 0);
  EXPECT_EQ(trigger.Take(), 1u);
  EXPECT_TRUE(irqs.Pending(kIntx, 0));
  resample.Signal();  // The guest's EOI, as KVM's resampler reports it.
  loop->Flush();
  EXPECT_EQ(trigger.Take(), 1u);
  EXPECT_FALSE(irqs.Pending(kIntx, 0));
  EXPECT_TRUE(irqs.IsMasked(kIntx, 0));
  resample.Signal();
  loop->Flush();
  EXPECT_FALSE(irqs.IsMasked(kIntx, 0));
  // De-assign the resample fd: signalling it no longer unmasks.
  IrqSet off = Set(kIntx, kEventfd | kUnmask, 0, 1);
  off.fds = One(UniqueFd());
  ASSERT_EQ(Errno(Apply(irqs, std::move(off))), 0);
  irqs.Trigger(kIntx, 0);
  EXPECT_EQ(trigger.Take(), 1u);
  resample.Signal();
  loop->Flush();
  EXPECT_TRUE(irqs.IsMasked(kIntx, 0));
  // A resample fd that is not an eventfd is EINVAL (eventfd_ctx_fdget).
  IrqSet bad = Set(kIntx, kEventfd | kUnmask, 0, 1);
  bad.fds = One(UniqueFd(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC)));
  EXPECT_EQ(Errno(Apply(irqs, std::move(bad))), EINVAL);
}

TEST(DeviceIrqsTest, MsiAssignFireDeassignAndDisable) {
  for (uint32_t index : {kMsi, kMsix}) {
    SCOPED_TRACE(index);
    DeviceIrqs irqs(kCounts);
    Efd a;
    Efd b;
    EXPECT_EQ(Errno(Apply(irqs, Set(index, kNone | kTrigger, 0, 1))), EINVAL);  // Not enabled.
    std::vector<UniqueFd> fds;
    fds.push_back(a.Dup());
    fds.push_back(b.Dup());
    ASSERT_EQ(Errno(Apply(irqs, Fds(index, 1, std::move(fds)))), 0);
    irqs.Trigger(index, 1);
    irqs.Trigger(index, 2);
    irqs.Trigger(index, 0);  // Unassigned: dropped.
    EXPECT_EQ(a.Take(), 1u);
    EXPECT_EQ(b.Take(), 1u);
    EXPECT_FALSE(irqs.IsMasked(index, 1));
    ASSERT_EQ(Errno(Apply(irqs, Set(index, kNone | kTrigger, 0, 3))), 0);
    EXPECT_EQ(a.Take(), 1u);
    EXPECT_EQ(b.Take(), 1u);
    ASSERT_EQ(Errno(Apply(irqs, Bools(index, kTrigger, 1, {0, 1}))), 0);
    EXPECT_EQ(a.Take(), 0u);
    EXPECT_EQ(b.Take(), 1u);
    // De-assign vector 2 only.
    ASSERT_EQ(Errno(Apply(irqs, Fds(index, 2, One(UniqueFd())))), 0);
    irqs.Trigger(index, 1);
    irqs.Trigger(index, 2);
    EXPECT_EQ(a.Take(), 1u);
    EXPECT_EQ(b.Take(), 0u);
    // Count 0 disables every vector.
    ASSERT_EQ(Errno(Apply(irqs, Set(index, kNone | kTrigger, 0, 0))), 0);
    irqs.Trigger(index, 1);
    EXPECT_EQ(a.Take(), 0u);
    EXPECT_EQ(Errno(Apply(irqs, Bools(index, kTrigger, 1, {1}))), EINVAL);
  }
}

TEST(DeviceIrqsTest, OnlyOneInterruptModeAtATime) {
  DeviceIrqs irqs(kCounts);
  Efd efd;
  ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), 0);
  EXPECT_EQ(Errno(Apply(irqs, Fds(kMsi, 0, One(efd.Dup())))), EINVAL);
  EXPECT_EQ(Errno(Apply(irqs, Fds(kMsix, 0, One(efd.Dup())))), EINVAL);
  ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kTrigger, 0, 0))), 0);
  ASSERT_EQ(Errno(Apply(irqs, Fds(kMsi, 0, One(efd.Dup())))), 0);
  EXPECT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(efd.Dup())))), EINVAL);
  EXPECT_EQ(Errno(Apply(irqs, Fds(kMsix, 0, One(efd.Dup())))), EINVAL);
  EXPECT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kMask, 0, 1))), EINVAL);
  irqs.Trigger(kIntx, 0);  // Dropped in MSI mode.
  EXPECT_EQ(efd.Take(), 0u);
  // ERR and REQ are independent of the mode.
  ASSERT_EQ(Errno(Apply(irqs, Fds(kErr, 0, One(efd.Dup())))), 0);
  irqs.DisableAll();
  irqs.Trigger(kMsi, 0);
  irqs.Trigger(kErr, 0);
  EXPECT_EQ(efd.Take(), 0u);
  ASSERT_EQ(Errno(Apply(irqs, Fds(kMsix, 0, One(efd.Dup())))), 0);
  irqs.Trigger(kMsix, 0);
  EXPECT_EQ(efd.Take(), 1u);
}

TEST(DeviceIrqsTest, ErrAndReq) {
  for (uint32_t index : {kErr, kReq}) {
    SCOPED_TRACE(index);
    DeviceIrqs irqs(kCounts);
    Efd efd;
    irqs.Trigger(index, 0);  // Nothing assigned.
    ASSERT_EQ(Errno(Apply(irqs, Set(index, kNone | kTrigger, 0, 1))), 0);
    ASSERT_EQ(Errno(Apply(irqs, Fds(index, 0, One(efd.Dup())))), 0);
    irqs.Trigger(index, 0);
    EXPECT_EQ(efd.Take(), 1u);
    ASSERT_EQ(Errno(Apply(irqs, Set(index, kNone | kTrigger, 0, 1))), 0);
    EXPECT_EQ(efd.Take(), 1u);
    ASSERT_EQ(Errno(Apply(irqs, Bools(index, kTrigger, 0, {0}))), 0);
    EXPECT_EQ(efd.Take(), 0u);
    ASSERT_EQ(Errno(Apply(irqs, Bools(index, kTrigger, 0, {1}))), 0);
    EXPECT_EQ(efd.Take(), 1u);
    ASSERT_EQ(Errno(Apply(irqs, Fds(index, 0, One(UniqueFd())))), 0);
    irqs.Trigger(index, 0);
    EXPECT_EQ(efd.Take(), 0u);
    ASSERT_EQ(Errno(Apply(irqs, Fds(index, 0, One(efd.Dup())))), 0);
    ASSERT_EQ(Errno(Apply(irqs, Set(index, kNone | kTrigger, 0, 0))), 0);
    irqs.Trigger(index, 0);
    EXPECT_EQ(efd.Take(), 0u);
  }
}

TEST(DeviceIrqsTest, ValidationRejectsOutOfRangeBeforeTheDevice) {
  DeviceIrqs irqs(kCounts);
  EXPECT_EQ(Errno(Apply(irqs, Set(kMsi, kNone | kTrigger, 3, 2))), EINVAL);
  EXPECT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kMask, 0, 0))), EINVAL);
}

TEST(DeviceIrqsTest, ConcurrentTriggersWhileReassigning) {
  auto loop = VirqfdLoop::Create();
  ASSERT_TRUE(loop.has_value());
  ASSERT_TRUE(loop->Start().has_value());
  DeviceIrqs irqs(kCounts, &*loop);
  Efd msix;
  Efd resample;
  std::atomic<bool> stop{false};
  std::vector<std::thread> devices;
  for (int t = 0; t < 3; ++t) {
    devices.emplace_back([&, t] {
      while (!stop) {
        irqs.Trigger(kMsix, static_cast<uint32_t>(t));
        irqs.Trigger(kIntx, 0);
        (void)irqs.IsMasked(kIntx, 0);
        (void)irqs.Pending(kIntx, 0);
        irqs.SetIntxLevel(t == 0);
        (void)irqs.EnabledIndex();
      }
    });
  }
  std::thread resampler([&] {
    while (!stop) resample.Signal();
  });
  for (int i = 0; i < 300; ++i) {
    if (i % 2 == 0) {
      std::vector<UniqueFd> fds;
      for (int v = 0; v < 3; ++v) fds.push_back(msix.Dup());
      ASSERT_EQ(Errno(Apply(irqs, Fds(kMsix, 0, std::move(fds)))), 0);
      ASSERT_EQ(Errno(Apply(irqs, Set(kMsix, kNone | kTrigger, 0, 0))), 0);
    } else {
      ASSERT_EQ(Errno(Apply(irqs, Fds(kIntx, 0, One(msix.Dup())))), 0);
      IrqSet set = Set(kIntx, kEventfd | kUnmask, 0, 1);
      set.fds = One(resample.Dup());
      ASSERT_EQ(Errno(Apply(irqs, std::move(set))), 0);
      ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kUnmask, 0, 1))), 0);
      if (i % 3 == 0) irqs.DisableAll();
      else ASSERT_EQ(Errno(Apply(irqs, Set(kIntx, kNone | kTrigger, 0, 0))), 0);
    }
    msix.Take();
  }
  stop = true;
  for (auto& t : devices) t.join();
  resampler.join();
  loop->Flush();
}

}  // namespace
}  // namespace umdev::irq
