// gpu_slice_bench: vendor/gpu end to end. Fair share: 2-4 instances of one
// parent saturate it with ring FILLs for a fixed wall time, and each
// instance's share of the device's busy time is compared with its configured
// share. Overhead: the same DISPATCH (vadd) or COPY through a slice's ring
// and through the engine's Slice API directly, alternated in the same run.
#include <benchmark/benchmark.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "umdev/common/mapping.h"
#include "umdev/common/unique_fd.h"
#include "umdev/pinning/type1_backend.h"
#include "umdev/vendor/gpu/accelerator.h"
#include "umdev/vendor/gpu/builtin_kernels.h"
#include "umdev/vendor/gpu/gpu_device.h"
#include "umdev/vendor/gpu/gpu_parent.h"

namespace umdev::vendor::gpu {
namespace {

using namespace regs;  // NOLINT: the register map is this file's vocabulary.
using Clock = std::chrono::steady_clock;

constexpr uint64_t kGuestIova = 0x100000;
constexpr uint64_t kGuestBytes = 16 << 20;
constexpr uint64_t kParentMemory = 64 << 20;
constexpr uint32_t kRingEntries = 64;  // One 4 KiB page per ring.

[[noreturn]] void Die(const std::string& what, const Error& error) {
  spdlog::critical("gpu_slice_bench: {}: {}", what, error.Describe());
  std::abort();
}

template <typename T>
T Must(Result<T> result, const std::string& what) {
  if (!result.has_value()) Die(what, result.error());
  return std::move(result).value();
}

void Must(Result<void> result, const std::string& what) {
  if (!result.has_value()) Die(what, result.error());
}

// Guest RAM as the daemon sees a local client's: a memfd mapped into the
// real type1 backend at kGuestIova, and into this process for the bench.
class GuestRam {
 public:
  GuestRam() : fd_(::memfd_create("gpu-bench-guest", MFD_CLOEXEC)) {
    if (!fd_.valid() || ::ftruncate(fd_.get(), kGuestBytes) != 0) std::abort();
    mapping_ = Must(Mapping::Map(fd_.get(), 0, kGuestBytes, PROT_READ | PROT_WRITE, MAP_SHARED),
                    "map guest RAM");
    Must(backend_.Map(DmaMapRequest{.iova = kGuestIova, .size = kGuestBytes,
                                    .prot = kProtRead | kProtWrite,
                                    .fd = UniqueFd(::dup(fd_.get())), .offset = 0}),
         "type1 map");
  }
  std::byte* At(uint64_t iova) { return mapping_.data() + (iova - kGuestIova); }
  pinning::Type1Backend& backend() { return backend_; }

 private:
  UniqueFd fd_;
  Mapping mapping_;
  pinning::Type1Backend backend_{std::make_shared<pinning::LockedMemoryAccount>(uint64_t{1} << 30)};
};

// One instance's path to guest RAM, pinning on behalf of its device (what the
// core's Device does). Thread-safe.
class InstanceDma final : public DmaAccess {
 public:
  explicit InstanceDma(pinning::Type1Backend& backend) : backend_(backend) {}
  void set_owner(DmaUnmapListener* owner) { owner_ = owner; }
  Result<std::vector<void*>> PinPages(uint64_t iova, int npage, uint32_t prot) override {
    return backend_.PinPages(*owner_, iova, npage, prot);
  }
  void UnpinPages(uint64_t iova, int npage) override { backend_.UnpinPages(*owner_, iova, npage); }
  Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) override {
    return backend_.DmaRead(iova, out);
  }
  Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) override {
    return backend_.DmaWrite(iova, data);
  }

 private:
  pinning::Type1Backend& backend_;
  DmaUnmapListener* owner_ = nullptr;
};

using Entry = RingEntry;

// A gpu instance of |parent| with its ring at |ring_iova|, driven through
// BAR0 as a guest driver would. Used by the bench thread only.
class Instance {
 public:
  Instance(GpuParent& parent, GuestRam& guest, const std::string& type, uint64_t ring_iova)
      : guest_(guest), dma_(guest.backend()), ring_iova_(ring_iova) {
    const MdevTypeSpec* spec = nullptr;
    const auto types = parent.types();
    for (const MdevTypeSpec& t : types) {
      if (t.sysfs_name == type) spec = &t;
    }
    if (spec == nullptr) std::abort();
    ops_ = Must(parent.Probe(ProbeContext{.type = *spec, .uuid = Uuid{}, .dma = dma_}),
                "create " + type);
    device_ = dynamic_cast<GpuDevice*>(ops_.get());
    dma_.set_owner(device_->dma_unmap_listener());
    Must(guest.backend().AttachListener(*device_->dma_unmap_listener()), "attach listener");
    SetReg(kRegQueueBase, static_cast<uint32_t>(ring_iova));
    SetReg(kRegQueueBase + 4, static_cast<uint32_t>(ring_iova >> 32));
    SetReg(kRegQueueSize, kRingEntries);
    SetReg(kRegQueueCtrl, kQueueEnable);
  }
  ~Instance() {
    guest_.backend().DetachListener(*device_->dma_unmap_listener());
    ops_.reset();
  }
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  GpuDevice& device() { return *device_; }
  uint32_t Reg(uint32_t offset) {
    uint32_t value = 0;
    Must(device_->RegionRead(VFIO_PCI_BAR0_REGION_INDEX, offset,
                             std::as_writable_bytes(std::span(&value, 1))),
         "BAR0 read");
    return value;
  }
  void SetReg(uint32_t offset, uint32_t value) {
    Must(device_->RegionWrite(VFIO_PCI_BAR0_REGION_INDEX, offset,
                              std::as_bytes(std::span(&value, 1))),
         "BAR0 write");
  }
  void WriteSlice(uint64_t offset, std::span<const std::byte> data) {
    Must(device_->RegionWrite(VFIO_PCI_BAR2_REGION_INDEX, offset, data), "BAR2 write");
  }
  // Every slot of the ring holds |entry|, so keeping the ring full is only
  // a matter of moving TAIL.
  void FillRing(const Entry& entry) {
    for (uint32_t i = 0; i < kRingEntries; ++i) {
      std::memcpy(guest_.At(ring_iova_ + uint64_t{i} * kEntrySize), entry.bytes, kEntrySize);
    }
  }
  // Tops the ring up to full and rings the doorbell.
  void Refill() {
    SetReg(kRegQueueTail, Reg(kRegQueueHead) + kRingEntries);
    SetReg(kRegDoorbell, 1);
  }
  // Fills the ring with batches of |entry| each closed by a FENCE that
  // raises MSI-X vector 0, which the bench waits on as a guest driver would
  // (one wake-up per batch).
  void FillRingInBatches(const Entry& entry, uint32_t batch) {
    const Entry fence = Entry()
                            .U32(kEntryOpcode, kOpFence)
                            .U32(kEntryFlags, kFenceInterrupt)
                            .U64(kFenceIova, kGuestIova + 0x8000)
                            .U64(kFenceValue, 1);
    for (uint32_t i = 0; i < kRingEntries; ++i) {
      const Entry& e = (i + 1) % batch == 0 ? fence : entry;
      std::memcpy(guest_.At(ring_iova_ + uint64_t{i} * kEntrySize), e.bytes, kEntrySize);
    }
    fence_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    IrqSet set{.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
               .index = VFIO_PCI_MSIX_IRQ_INDEX, .start = 0, .count = 1};
    set.fds.push_back(UniqueFd(::dup(fence_fd_.get())));
    Must(device_->SetIrqs(set), "MSI-X eventfd");
  }
  // Submits the next batch (|batch| entries, the last a FENCE) and blocks on
  // the fence's interrupt.
  void RunBatch(uint32_t batch) {
    tail_ += batch;
    SetReg(kRegQueueTail, tail_);
    SetReg(kRegDoorbell, 1);
    uint64_t count = 0;
    if (::read(fence_fd_.get(), &count, sizeof(count)) != sizeof(count) ||
        Reg(kRegErrorCode) != 0) {
      spdlog::critical("gpu_slice_bench: ring stopped with errno {}", Reg(kRegErrorCode));
      std::abort();
    }
  }

 private:
  GuestRam& guest_;
  InstanceDma dma_;
  const uint64_t ring_iova_;
  std::unique_ptr<DeviceOps> ops_;
  GpuDevice* device_ = nullptr;
  UniqueFd fence_fd_;
  uint32_t tail_ = 0;
};

enum BenchEngine : int64_t { kCpuEngine = 0, kVulkanEngine = 1 };

// The parent on the requested engine (Vulkan: llvmpipe, else the first
// device); null, with the benchmark skipped, when there is none.
std::shared_ptr<GpuParent> MakeParent(benchmark::State& state, SchedulerOptions scheduler) {
  GpuParentOptions options{.parent_name = "bench", .engine = EngineKind::kCpu,
                           .memory = kParentMemory, .scheduler = scheduler};
  if (state.range(0) == kVulkanEngine) {
    auto accelerators = DiscoverAccelerators();
    if (!accelerators.has_value() || accelerators->empty()) {
      state.SkipWithError("no Vulkan device");
      return nullptr;
    }
    options.engine = EngineKind::kVulkan;
    options.device_index = accelerators->front().index;
    for (const Accelerator& a : *accelerators) {
      if (a.name.find("llvmpipe") != std::string::npos) options.device_index = a.index;
    }
  }
  return Must(GpuParent::Create(options), "create parent");
}

// --- Fair share ---

struct ShareCase {
  SchedulingPolicy policy;
  std::vector<std::string> types;
};

const ShareCase kShareCases[] = {
    {SchedulingPolicy::kFixedShare, {"1of2", "1of4", "1of4"}},
    {SchedulingPolicy::kFixedShare, {"1of2", "1of4"}},  // 25 % of the device idle.
    {SchedulingPolicy::kEqualShare, {"1of4", "1of4"}},
    {SchedulingPolicy::kEqualShare, {"1of2", "1of4", "1of4"}},
    {SchedulingPolicy::kEqualShare, {"1of4", "1of4", "1of4", "1of4"}},
};

constexpr uint64_t kFillBytes = 1 << 20;
constexpr auto kWarmUp = std::chrono::milliseconds(200);
constexpr auto kWindow = std::chrono::milliseconds(1500);

// Args: engine, case. Each instance's ring is kept full of 1 MiB FILLs (the
// bench thread tops it up every 500 us); after a warm-up, the busy time each
// accumulates over the window is its achieved share. Counters (percent):
// sN the share of the device's busy time instance N got, tN its target
// (fixed: the type's share, normalised when the shares leave part of the
// device idle; equal: 1/N), wN its busy time as a share of wall time,
// worst_pp the largest |sN - tN| in percentage points, busy the device's
// busy time over wall time.
void BM_FairShare(benchmark::State& state) {
  const ShareCase& c = kShareCases[state.range(1)];
  auto parent = MakeParent(state, {.policy = c.policy});
  if (parent == nullptr) return;
  GuestRam guest;
  std::vector<std::unique_ptr<Instance>> instances;
  std::vector<double> target;
  double share_sum = 0;
  for (size_t i = 0; i < c.types.size(); ++i) {
    instances.push_back(
        std::make_unique<Instance>(*parent, guest, c.types[i], kGuestIova + 0x1000 * i));
    instances.back()->FillRing(Entry()
                                   .U32(kEntryOpcode, kOpFill)
                                   .U64(kFillOffset, 0)
                                   .U64(kFillSize, kFillBytes)
                                   .U32(kFillPattern, static_cast<uint32_t>(i)));
    const double share = c.policy == SchedulingPolicy::kFixedShare
                             ? instances.back()->Reg(kRegComputeShare) / 1000.0
                             : 1.0 / static_cast<double>(c.types.size());
    target.push_back(share);
    share_sum += share;
  }
  for (double& t : target) t /= share_sum;
  std::vector<double> busy(instances.size());
  double wall = 0;
  for (auto _ : state) {
    auto run_for = [&](std::chrono::milliseconds span) {
      const auto end = Clock::now() + span;
      while (Clock::now() < end) {
        for (auto& instance : instances) instance->Refill();
        std::this_thread::sleep_for(std::chrono::microseconds(500));
      }
    };
    run_for(kWarmUp);
    std::vector<std::chrono::nanoseconds> before;
    for (auto& instance : instances) before.push_back(instance->device().stats().busy);
    const auto start = Clock::now();
    run_for(kWindow);
    wall = std::chrono::duration<double>(Clock::now() - start).count();
    for (size_t i = 0; i < instances.size(); ++i) {
      busy[i] = std::chrono::duration<double>(instances[i]->device().stats().busy - before[i])
                    .count();
    }
    // Stop the load before the instances go: disabling the queue ends it.
    for (auto& instance : instances) instance->SetReg(kRegQueueCtrl, 0);
    for (auto& instance : instances) instance->device().WaitIdle();
  }
  double total = 0;
  for (double b : busy) total += b;
  double worst = 0;
  for (size_t i = 0; i < instances.size(); ++i) {
    const double achieved = total > 0 ? busy[i] / total : 0;
    const std::string n = std::to_string(i);
    state.counters["s" + n] = 100 * achieved;
    state.counters["t" + n] = 100 * target[i];
    state.counters["w" + n] = 100 * busy[i] / wall;
    worst = std::max(worst, std::abs(achieved - target[i]));
  }
  state.counters["worst_pp"] = 100 * worst;
  state.counters["busy"] = 100 * total / wall;
  std::string label = std::string(FormatSchedulingPolicy(c.policy));
  for (const std::string& t : c.types) label += " " + t;
  state.SetLabel(label);
}

// --- Overhead ---

enum Workload : int64_t { kVadd = 0, kCopyDeviceToDevice = 1, kCopyGuestToDevice = 2,
                          kCopyDeviceToGuest = 3, kVaddSmall = 4 };
// The small DISPATCH: one workgroup of 64, where fixed costs (building or
// finding the pipeline, the descriptor set, the submission) dominate.
constexpr uint32_t kSmallElements = 64;

// Slice layout: the kernel, its name and arguments, then three 1 MiB buffers.
constexpr uint64_t kModule = 0;
constexpr uint64_t kName = 0x40000;
constexpr uint64_t kArgs = 0x40100;
constexpr uint64_t kBufA = 0x100000;
constexpr uint64_t kBufB = 0x200000;
constexpr uint64_t kBufC = 0x300000;
constexpr uint64_t kBufBytes = 1 << 20;
constexpr uint32_t kElements = kBufBytes / 4;
constexpr uint64_t kGuestData = kGuestIova + 0x100000;
constexpr uint32_t kBatch = 32;  // Entries per doorbell: kBatch - 1 commands and a FENCE.

// The ring entry of |workload| for |instance| (putting what it needs in its
// slice), and the same command on |slice| through the Slice API.
struct OverheadWork {
  Entry entry;
  std::function<void()> direct;
};

OverheadWork PrepareWork(int64_t workload, Instance& instance, Slice& slice, GuestRam& guest,
                         std::vector<uint32_t>& push) {
  std::vector<uint32_t> ones(kElements, 1);
  for (uint64_t at : {kBufA, kBufB}) {
    instance.WriteSlice(at, std::as_bytes(std::span(ones)));
    Must(slice.Write(at, std::as_bytes(std::span(ones))), "slice write");
  }
  std::memset(guest.At(kGuestData), 0x5a, kBufBytes);
  switch (workload) {
    case kVadd:
    case kVaddSmall: {
      const BuiltinKernel* kernel = FindBuiltinKernel("umdev_vadd_u32");
      if (kernel == nullptr) std::abort();
      const uint32_t elements = workload == kVaddSmall ? kSmallElements : kElements;
      const uint64_t bytes = static_cast<uint64_t>(elements) * 4;
      instance.WriteSlice(kModule, std::as_bytes(kernel->spirv));
      const std::string name(kernel->name);
      instance.WriteSlice(kName, std::as_bytes(std::span(name.c_str(), name.size() + 1)));
      const uint32_t groups = elements / kernel->local_size_x;
      std::vector<std::byte> args(kArgsHeaderSize + 3 * kArgsBindingSize + 4);
      const uint32_t header[6] = {groups, 1, 1, 3, 4, 0};
      std::memcpy(args.data(), header, sizeof(header));
      const uint64_t buffers[3] = {kBufA, kBufB, kBufC};
      for (uint32_t b = 0; b < 3; ++b) {
        std::byte* at = args.data() + kArgsHeaderSize + b * kArgsBindingSize;
        std::memcpy(at, &b, 4);
        std::memcpy(at + 8, &buffers[b], 8);
        std::memcpy(at + 16, &bytes, 8);
      }
      std::memcpy(args.data() + kArgsHeaderSize + 3 * kArgsBindingSize, &elements, 4);
      instance.WriteSlice(kArgs, args);
      push.assign(1, elements);
      auto command = std::make_shared<DispatchCommand>(DispatchCommand{
          .spirv = kernel->spirv, .entry_point = name,
          .push_constants = std::as_bytes(std::span(push)),
          .bindings = {{0, kBufA, bytes}, {1, kBufB, bytes}, {2, kBufC, bytes}},
          .groups_x = groups});
      return {Entry()
                  .U32(kEntryOpcode, kOpDispatch)
                  .U64(kDispatchModuleOffset, kModule)
                  .U32(kDispatchModuleSize, static_cast<uint32_t>(kernel->spirv.size_bytes()))
                  .U64(kDispatchEntryOffset, kName)
                  .U64(kDispatchArgsOffset, kArgs),
              [&slice, command] { Must(slice.Dispatch(*command), "dispatch"); }};
    }
    case kCopyDeviceToDevice:
      return {Entry().U32(kEntryOpcode, kOpCopy).U64(kCopySrc, kBufA).U64(kCopyDst, kBufC)
                  .U64(kCopySize, kBufBytes),
              [&slice] { Must(slice.Copy(kBufC, kBufA, kBufBytes), "copy"); }};
    case kCopyGuestToDevice:
      return {Entry().U32(kEntryOpcode, kOpCopy).U32(kEntryFlags, kCopySrcGuest)
                  .U64(kCopySrc, kGuestData).U64(kCopyDst, kBufC).U64(kCopySize, kBufBytes),
              [&slice, src = guest.At(kGuestData)] {
                Must(slice.Write(kBufC, std::span(src, kBufBytes)), "write");
              }};
    default:
      return {Entry().U32(kEntryOpcode, kOpCopy).U32(kEntryFlags, kCopyDstGuest)
                  .U64(kCopySrc, kBufA).U64(kCopyDst, kGuestData).U64(kCopySize, kBufBytes),
              [&slice, dst = guest.At(kGuestData)] {
                Must(slice.Read(kBufA, std::span(dst, kBufBytes)), "read");
              }};
  }
}

// Runs a batch of work on its own thread when told, as a driver's
// submission thread would: one wake-up there and one back per batch, the
// same hand-offs a ring's doorbell and fence interrupt cost. Used by one
// bench thread at a time.
class SubmitThread {
 public:
  SubmitThread()
      : go_(::eventfd(0, EFD_CLOEXEC)), done_(::eventfd(0, EFD_CLOEXEC)), thread_([this] {
          for (;;) {
            uint64_t n = 0;
            if (::read(go_.get(), &n, sizeof(n)) != sizeof(n) || work_ == nullptr) return;
            (*work_)();
            n = 1;
            if (::write(done_.get(), &n, sizeof(n)) != sizeof(n)) std::abort();
          }
        }) {}
  ~SubmitThread() {
    work_ = nullptr;
    Signal(go_);
    thread_.join();
  }
  void Run(const std::function<void()>& work) {
    work_ = &work;
    Signal(go_);
    uint64_t n = 0;
    if (::read(done_.get(), &n, sizeof(n)) != sizeof(n)) std::abort();
  }

 private:
  static void Signal(const UniqueFd& fd) {
    const uint64_t one = 1;
    if (::write(fd.get(), &one, sizeof(one)) != sizeof(one)) std::abort();
  }
  UniqueFd go_, done_;
  const std::function<void()>* work_ = nullptr;  // Set before each eventfd write.
  std::thread thread_;
};

// Args: engine, workload. Each iteration runs kBatch - 1 commands and a
// FENCE through an instance's ring (doorbell, wait for the fence's MSI-X),
// then kBatch - 1 of the same command on a slice of the same engine through
// the Slice API twice: on a submission thread (one hand-off there and back
// per batch, as the ring has) and inline on the bench thread. All three see
// the same machine state. Counters per command: ring_us, direct_us (the
// submission thread), inline_us; overhead_pct = ring / direct - 1, what the
// device and its scheduler add; inline_pct = ring / inline - 1, which also
// counts the two thread wake-ups per batch.
void BM_Overhead(benchmark::State& state) {
  auto parent = MakeParent(state, {});
  if (parent == nullptr) return;
  GuestRam guest;
  Instance instance(*parent, guest, "1of2", kGuestIova);
  auto slice = Must(parent->engine()->CreateSlice(kParentMemory / 2), "direct slice");
  std::vector<uint32_t> push;
  const OverheadWork work = PrepareWork(state.range(1), instance, *slice, guest, push);
  instance.FillRingInBatches(work.entry, kBatch);
  // One batch of each first: pipelines, page tables and caches warm on both.
  const std::function<void()> batch = [&work] {
    for (uint32_t i = 0; i + 1 < kBatch; ++i) work.direct();
  };
  SubmitThread submit;
  instance.RunBatch(kBatch);
  submit.Run(batch);
  batch();
  std::chrono::duration<double> ring{0}, direct{0}, inline_direct{0};
  for (auto _ : state) {
    auto start = Clock::now();
    instance.RunBatch(kBatch);
    ring += Clock::now() - start;
    start = Clock::now();
    submit.Run(batch);
    direct += Clock::now() - start;
    start = Clock::now();
    batch();
    inline_direct += Clock::now() - start;
  }
  const double commands = static_cast<double>(state.iterations()) * (kBatch - 1);
  state.counters["ring_us"] = 1e6 * ring.count() / commands;
  state.counters["direct_us"] = 1e6 * direct.count() / commands;
  state.counters["inline_us"] = 1e6 * inline_direct.count() / commands;
  state.counters["overhead_pct"] = 100 * (ring.count() / direct.count() - 1);
  state.counters["inline_pct"] = 100 * (ring.count() / inline_direct.count() - 1);
  static constexpr const char* kNames[] = {"vadd 256Ki", "copy d2d 1MiB", "copy g2d 1MiB",
                                           "copy d2g 1MiB", "vadd 64"};
  state.SetLabel(std::string(state.range(0) == kVulkanEngine ? "vulkan " : "cpu ") +
                 kNames[state.range(1)]);
}

void FairShareArgs(benchmark::internal::Benchmark* b) {
  for (int64_t engine : {kCpuEngine, kVulkanEngine}) {
    for (int64_t c = 0; c < static_cast<int64_t>(std::size(kShareCases)); ++c) {
      b->Args({engine, c});
    }
  }
}

void OverheadArgs(benchmark::internal::Benchmark* b) {
  for (int64_t engine : {kCpuEngine, kVulkanEngine}) {
    for (int64_t w : {kVadd, kCopyDeviceToDevice, kCopyGuestToDevice, kCopyDeviceToGuest, kVaddSmall}) {
      b->Args({engine, w});
    }
  }
}

BENCHMARK(BM_FairShare)->Apply(FairShareArgs)->Iterations(1)->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Overhead)->Apply(OverheadArgs)->MinTime(1.0)->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace umdev::vendor::gpu

BENCHMARK_MAIN();
