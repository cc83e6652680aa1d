// GpuParent with its scheduler: the "scheduler" config key, each policy's
// runner, attach refusals as instance-create failures, and the scheduler's
// counters as device attributes.
#include <atomic>

#include <nlohmann/json.hpp>

#include "gpu_device_test_util.h"
#include "umdev/vendor/gpu/gpu_parent.h"
#include "umdev/vendor/gpu/scheduler_runner.h"

namespace umdev::vendor::gpu::testing {
namespace {

class IdleQueue final : public CommandQueue {
 public:
  std::optional<CommandCost> RunOne() override { return std::nullopt; }
};

// Refuses with |error| when set; otherwise hands out attachments reporting
// fixed counters.
class FakeRunner final : public QueueRunner {
 public:
  class Attachment final : public QueueAttachment {
   public:
    explicit Attachment(std::atomic<int>& live) : live_(live) { ++live_; }
    ~Attachment() override { --live_; }
    void Kick() override {}
    QueueStats Stats() const override { return {.preempted = 3, .yielded = 4, .throttled = 5}; }

   private:
    std::atomic<int>& live_;
  };

  Result<std::unique_ptr<QueueAttachment>> Attach(CommandQueue*, uint32_t) override {
    if (error != 0) return Fail(error, "fake runner refuses");
    return std::unique_ptr<QueueAttachment>(std::make_unique<Attachment>(live));
  }

  int error = 0;
  std::atomic<int> live{0};
};

constexpr uint64_t kSchedulerParentMemory = 16 << 20;

const Scheduler& SchedulerOf(const GpuParent& parent) {
  auto* runner = dynamic_cast<SchedulerRunner*>(parent.runner().get());
  EXPECT_NE(runner, nullptr) << "the parent's runner is not a SchedulerRunner";
  return runner->scheduler();
}

std::shared_ptr<GpuParent> CpuParentWith(SchedulerOptions scheduler) {
  auto parent = GpuParent::Create({.parent_name = "gpu-cpu", .engine = EngineKind::kCpu,
                                   .memory = kSchedulerParentMemory, .scheduler = std::move(scheduler)});
  EXPECT_TRUE(parent.has_value()) << parent.error().Describe();
  return parent.value_or(nullptr);
}

TEST(GpuParentSchedulerTest, DefaultIsABestEffortScheduler) {
  auto parent = CpuParentWith({});
  ASSERT_NE(parent, nullptr);
  EXPECT_EQ(SchedulerOf(*parent).policy(), SchedulingPolicy::kBestEffort);
  EXPECT_EQ(SchedulerOf(*parent).time_slice(), std::chrono::microseconds(2000));
}

TEST(GpuParentSchedulerTest, EveryPolicyAttachesEachInstance) {
  for (SchedulingPolicy policy : {SchedulingPolicy::kBestEffort, SchedulingPolicy::kEqualShare,
                                  SchedulingPolicy::kFixedShare}) {
    SCOPED_TRACE(std::string(FormatSchedulingPolicy(policy)));
    auto parent = CpuParentWith({.policy = policy});
    ASSERT_NE(parent, nullptr);
    const Scheduler& scheduler = SchedulerOf(*parent);
    EXPECT_EQ(scheduler.policy(), policy);
    NoDma dma;
    auto a = Create(*parent, "1of2", dma);
    auto b = Create(*parent, "1of2", dma);
    ASSERT_TRUE(a.has_value()) << a.error().Describe();
    ASSERT_TRUE(b.has_value()) << b.error().Describe();
    EXPECT_EQ(scheduler.attached_count(), 2u);
    a->reset();
    EXPECT_EQ(scheduler.attached_count(), 1u);
  }
}

TEST(GpuParentSchedulerTest, ARefusedAttachFailsTheCreateAndReturnsTheBudget) {
  auto runner = std::make_shared<FakeRunner>();
  runner->error = ENOSPC;
  auto engine = CreateCpuEngine({.memory_limit = kSchedulerParentMemory});
  ASSERT_TRUE(engine.has_value());
  auto parent = GpuParent::Create(
      {.parent_name = "gpu-cpu", .engine = EngineKind::kCpu, .memory = kSchedulerParentMemory},
      std::shared_ptr<Engine>(std::move(*engine)), runner);
  ASSERT_TRUE(parent.has_value()) << parent.error().Describe();
  NoDma dma;
  auto refused = Create(**parent, "1of2", dma);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ENOSPC);
  EXPECT_EQ((*parent)->free_eighths(), 8u);
  EXPECT_EQ((*parent)->engine()->memory_allocated(), 0u);
  runner->error = 0;
  auto accepted = Create(**parent, "1of2", dma);
  ASSERT_TRUE(accepted.has_value()) << accepted.error().Describe();
  EXPECT_EQ(runner->live.load(), 1);
}

TEST(GpuParentSchedulerTest, FixedSharesPastTheWholeDeviceAreRefused) {
  auto parent = CpuParentWith({.policy = SchedulingPolicy::kFixedShare});
  ASSERT_NE(parent, nullptr);
  // Something else on the same runner already holds the whole device.
  IdleQueue other;
  auto held = parent->runner()->Attach(&other, 1000);
  ASSERT_TRUE(held.has_value()) << held.error().Describe();
  NoDma dma;
  auto refused = Create(*parent, "1of8", dma);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ENOSPC);
  EXPECT_EQ(parent->free_eighths(), 8u);
  held->reset();
  EXPECT_TRUE(Create(*parent, "1of8", dma).has_value());
}

TEST(GpuParentSchedulerTest, SchedulerCountersAreDeviceAttributes) {
  auto runner = std::make_shared<FakeRunner>();
  auto engine = CreateCpuEngine({.memory_limit = kSchedulerParentMemory});
  ASSERT_TRUE(engine.has_value());
  auto parent = GpuParent::Create(
      {.parent_name = "gpu-cpu", .engine = EngineKind::kCpu, .memory = kSchedulerParentMemory},
      std::shared_ptr<Engine>(std::move(*engine)), runner);
  ASSERT_TRUE(parent.has_value());
  NoDma dma;
  auto device = Create(**parent, "1of4", dma);
  ASSERT_TRUE(device.has_value());
  std::vector<std::string> names;
  for (const DeviceAttribute& a : (*device)->Attributes()) names.push_back(a.name);
  EXPECT_EQ(names, (std::vector<std::string>{"busy_ns", "commands", "bytes", "errors",
                                              "timeouts", "preempted", "yielded",
                                              "throttled"}));
  EXPECT_EQ((*device)->ReadAttribute("preempted").value_or(""), "3");
  EXPECT_EQ((*device)->ReadAttribute("yielded").value_or(""), "4");
  EXPECT_EQ((*device)->ReadAttribute("throttled").value_or(""), "5");
  EXPECT_EQ((*device)->ReadAttribute("commands").value_or(""), "0");
  EXPECT_EQ((*device)->ReadAttribute("share").error().code, ENOENT);
}

TEST(GpuParentSchedulerTest, ConfigChoosesThePolicyAndSlice) {
  auto parent = MakeGpuParentFromConfig(nlohmann::json::parse(
      R"({"driver":"gpu","engine":"cpu","memory":"16M",
          "scheduler":{"policy":"equal_share","time_slice_us":500}})"));
  ASSERT_TRUE(parent.has_value()) << parent.error().Describe();
  auto* gpu = dynamic_cast<GpuParent*>(parent->get());
  ASSERT_NE(gpu, nullptr);
  EXPECT_EQ(SchedulerOf(*gpu).policy(), SchedulingPolicy::kEqualShare);
  EXPECT_EQ(SchedulerOf(*gpu).time_slice(), std::chrono::microseconds(500));

  auto fixed = MakeGpuParentFromConfig(nlohmann::json::parse(
      R"({"driver":"gpu","engine":"cpu","memory":"16M","scheduler":{"policy":"fixed_share"}})"));
  ASSERT_TRUE(fixed.has_value()) << fixed.error().Describe();
  EXPECT_EQ(SchedulerOf(*dynamic_cast<GpuParent*>(fixed->get())).policy(),
            SchedulingPolicy::kFixedShare);
  EXPECT_EQ(SchedulerOf(*dynamic_cast<GpuParent*>(fixed->get())).time_slice(),
            std::chrono::microseconds(2000));
}

TEST(GpuParentSchedulerTest, BadSchedulerConfigIsEinvalNamingTheKey) {
  for (const char* bad : {R"("best_effort")", R"({"policy":"round_robin"})", R"({"policy":3})",
                          R"({"time_slice_us":0})", R"({"time_slice_us":-5})",
                          R"({"time_slice_us":"2ms"})", R"({"time_slice_us":2000000})",
                          R"({"quantum":100})"}) {
    auto entry = nlohmann::json::parse(R"({"driver":"gpu","engine":"cpu","memory":"16M"})");
    entry["scheduler"] = nlohmann::json::parse(bad);
    auto refused = MakeGpuParentFromConfig(entry);
    ASSERT_FALSE(refused.has_value()) << bad;
    EXPECT_EQ(refused.error().code, EINVAL) << bad;
    EXPECT_NE(refused.error().context.find("scheduler"), std::string::npos)
        << refused.error().context;
  }
}

// Bounded polling: the scheduler counts a yield just after the device went
// idle, so the test waits for that condition, not for a time.
bool EventuallyNonZero(GpuDevice& device, std::string_view attribute) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (device.ReadAttribute(attribute).value_or("0") == "0") {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Real devices on a real SchedulerRunner: both rings of FILLs complete under
// every policy and the counters show it. Progress only, never timing.
class ScheduledDevicesTest : public GpuDeviceFixture {};

TEST_P(ScheduledDevicesTest, TwoHalfInstancesBothCompleteUnderEveryPolicy) {
  constexpr uint32_t kEntries = 15;  // A 16-entry ring, FILLs then a FENCE.
  for (SchedulingPolicy policy : {SchedulingPolicy::kBestEffort, SchedulingPolicy::kEqualShare,
                                  SchedulingPolicy::kFixedShare}) {
    SCOPED_TRACE(std::string(FormatSchedulingPolicy(policy)));
    auto runner = SchedulerRunner::Create({.policy = policy});
    ASSERT_TRUE(runner.has_value());
    std::vector<std::unique_ptr<Type1Dma>> dmas;
    std::vector<std::unique_ptr<GpuDevice>> devices;
    for (uint64_t i = 0; i < 2; ++i) {
      auto slice = engine_->CreateSlice(kSliceBytes);
      ASSERT_TRUE(slice.has_value());
      dmas.push_back(std::make_unique<Type1Dma>(backend_));
      devices.push_back(std::make_unique<GpuDevice>(
          GpuDeviceOptions{.compute_share_permille = 500,
                           .builtin_kernels_only = GetParam() == EngineKind::kCpu},
          std::move(*slice), *dmas.back(), **runner, nullptr));
      dmas.back()->set_owner(devices.back()->dma_unmap_listener());
      ASSERT_TRUE(devices.back()->attach_result().has_value());
      const uint64_t ring = kRingIova + 0x1000 * (i + 1);
      for (uint32_t e = 0; e < kEntries; ++e) {
        const Desc d = e + 1 < kEntries
                           ? Fill(0, kSliceBytes, 0x01010101u * static_cast<uint32_t>(e))
                           : Fence(kDataIova + 8 * i, 100 + i, false);
        std::memcpy(Guest(ring + uint64_t{e} * kEntrySize), d.bytes, kEntrySize);
      }
      auto set = [&](uint32_t offset, uint32_t value) {
        ASSERT_TRUE(devices.back()
                        ->RegionWrite(VFIO_PCI_BAR0_REGION_INDEX, offset,
                                      std::as_bytes(std::span(&value, 1)))
                        .has_value());
      };
      set(kRegQueueBase, static_cast<uint32_t>(ring));
      set(kRegQueueSize, 16);
      set(kRegQueueCtrl, kQueueEnable);
      set(kRegQueueTail, kEntries);
    }
    for (auto& device : devices) {
      uint32_t one = 1;
      ASSERT_TRUE(device->RegionWrite(VFIO_PCI_BAR0_REGION_INDEX, kRegDoorbell,
                                      std::as_bytes(std::span(&one, 1))).has_value());
    }
    for (uint64_t i = 0; i < 2; ++i) {
      ASSERT_TRUE(devices[i]->WaitIdle());
      EXPECT_EQ(devices[i]->stats().commands, kEntries);
      EXPECT_EQ(devices[i]->ReadAttribute("commands").value_or(""), std::to_string(kEntries));
      EXPECT_EQ(GetGuest<uint64_t>(kDataIova + 8 * i, 1).front(), 100 + i);
      // The ring runs dry: the turn ends by yielding, counted once the
      // scheduler's RunOne() after the last entry has answered "idle".
      EXPECT_TRUE(EventuallyNonZero(*devices[i], "yielded"));
    }
    EXPECT_EQ((*runner)->scheduler().attached_count(), 2u);
    devices.clear();
    EXPECT_EQ((*runner)->scheduler().attached_count(), 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, ScheduledDevicesTest,
                         ::testing::Values(EngineKind::kVulkan, EngineKind::kCpu), EngineName);

}  // namespace
}  // namespace umdev::vendor::gpu::testing
