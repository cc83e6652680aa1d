// pinning_bench: Type1Backend copy, translation, pin and map costs, reported as ratios.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "bench_check.h"
#include "run_times_reporter.h"
#include "umdev/common/mapping.h"
#include "umdev/common/unique_fd.h"
#include "umdev/pinning/type1_backend.h"

namespace umdev::pinning {
namespace {

constexpr uint64_t kIova = 0x100000000;   // Where the measured memory is mapped.
constexpr uint64_t kCopyBytes = 1 << 20;  // Largest copy measured.
constexpr int64_t kCopySizes[] = {8, 64, 512, 4096, 65536, 262144, kCopyBytes};
constexpr int kPinBatch = Type1Backend::kMaxPinPages;
constexpr double kMinTime = 0.1;  // Seconds per benchmark; ratios come from one run.
constexpr int kHotMappings = 64;  // fd-backed mappings the translation benchmark rotates over.

UniqueFd MakeMemfd(uint64_t bytes) {
  UniqueFd fd(::memfd_create("pinning_bench", MFD_CLOEXEC));
  if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) std::abort();
  return fd;
}

DmaMapRequest FdRequest(const UniqueFd& fd, uint64_t iova, uint64_t size, uint64_t offset) {
  return DmaMapRequest{.iova = iova, .size = size, .prot = kProtRead | kProtWrite,
                       .fd = UniqueFd(::dup(fd.get())), .offset = offset};
}

DmaMapRequest FdlessRequest(uint64_t iova, uint64_t size) {
  return DmaMapRequest{.iova = iova, .size = size, .prot = kProtRead | kProtWrite,
                       .fd = UniqueFd(), .offset = 0};
}

using bench::Check;

// A pinning device that never needs to unpin on request: benchmarks unpin.
class BenchListener : public DmaUnmapListener {
 public:
  void OnDmaUnmap(uint64_t, uint64_t) override {}
};

// One 1 MiB guest memfd mapped once in a backend and once directly, so
// memcpy and DmaRead/DmaWrite copy the same pages to the same buffer.
struct CopySetup {
  std::shared_ptr<LockedMemoryAccount> account = std::make_shared<LockedMemoryAccount>();
  Type1Backend backend{account};
  UniqueFd fd = MakeMemfd(kCopyBytes);
  Mapping direct = Check(Mapping::Map(fd.get(), 0, kCopyBytes, PROT_READ | PROT_WRITE,
                                      MAP_SHARED));
  std::vector<std::byte> buffer = std::vector<std::byte>(kCopyBytes, std::byte{1});

  CopySetup() {
    Check(backend.Map(FdRequest(fd, kIova, kCopyBytes, 0)));
    std::memset(direct.data(), 2, kCopyBytes);  // Fault every page in once.
  }
  static CopySetup& Get() {
    static CopySetup setup;
    return setup;
  }
};

void SetBytes(benchmark::State& state) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

void BM_Memcpy(benchmark::State& state) {
  CopySetup& s = CopySetup::Get();
  const auto size = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    std::memcpy(s.buffer.data(), s.direct.data(), size);
    benchmark::ClobberMemory();
  }
  SetBytes(state);
}

void BM_MemcpyToGuest(benchmark::State& state) {
  CopySetup& s = CopySetup::Get();
  const auto size = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    std::memcpy(s.direct.data(), s.buffer.data(), size);
    benchmark::ClobberMemory();
  }
  SetBytes(state);
}

void BM_DmaRead(benchmark::State& state) {
  CopySetup& s = CopySetup::Get();
  const auto size = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    Check(s.backend.DmaRead(kIova, std::span(s.buffer.data(), size)));
    benchmark::ClobberMemory();
  }
  SetBytes(state);
}

void BM_DmaWrite(benchmark::State& state) {
  CopySetup& s = CopySetup::Get();
  const auto size = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    Check(s.backend.DmaWrite(kIova, std::span<const std::byte>(s.buffer.data(), size)));
    benchmark::ClobberMemory();
  }
  SetBytes(state);
}

// Registered size by size, each copy next to its memcpy baseline, so a
// change in machine load between them skews a ratio as little as possible.
void RegisterCopyBenchmarks() {
  for (int64_t size : kCopySizes) {
    benchmark::RegisterBenchmark("BM_Memcpy", BM_Memcpy)->Arg(size)->MinTime(kMinTime);
    benchmark::RegisterBenchmark("BM_DmaRead", BM_DmaRead)->Arg(size)->MinTime(kMinTime);
    benchmark::RegisterBenchmark("BM_MemcpyToGuest", BM_MemcpyToGuest)->Arg(size)->MinTime(kMinTime);
    benchmark::RegisterBenchmark("BM_DmaWrite", BM_DmaWrite)->Arg(size)->MinTime(kMinTime);
  }
}

// |count| one-page mappings; kHotMappings of them (spread evenly) are backed
// by a memfd, the rest have no fd, which keeps 65535 mappings clear of
// vm.max_map_count (65530 by default) while the tree still has every node.
struct TranslationSetup {
  std::shared_ptr<LockedMemoryAccount> account = std::make_shared<LockedMemoryAccount>();
  Type1Backend backend{account};
  UniqueFd fd = MakeMemfd(kHotMappings * kPageSize);
  std::vector<uint64_t> hot;

  explicit TranslationSetup(int64_t count) {
    const int64_t hot_count = std::min<int64_t>(count, kHotMappings);
    int64_t next_hot = 0;
    for (int64_t i = 0; i < count; ++i) {
      const uint64_t iova = kIova + static_cast<uint64_t>(i) * kPageSize;
      if (next_hot < hot_count && i == next_hot * count / hot_count) {
        Check(backend.Map(FdRequest(fd, iova, kPageSize, next_hot * kPageSize)));
        hot.push_back(iova);
        ++next_hot;
      } else {
        Check(backend.Map(FdlessRequest(iova, kPageSize)));
      }
    }
  }
  static TranslationSetup& Get(int64_t count) {
    static std::map<int64_t, std::unique_ptr<TranslationSetup>> setups;
    auto& setup = setups[count];
    if (!setup) setup = std::make_unique<TranslationSetup>(count);
    return *setup;
  }
};

void BM_Translate8B(benchmark::State& state) {
  TranslationSetup& s = TranslationSetup::Get(state.range(0));
  std::byte out[8];
  size_t next = 0;
  for (auto _ : state) {
    Check(s.backend.DmaRead(s.hot[next], out));
    next = next + 1 == s.hot.size() ? 0 : next + 1;
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_Translate8B)->Arg(1)->Arg(1000)->Arg(65535)->MinTime(kMinTime);

// kPinBatch resident pages, faulted in before timing.
struct PinSetup {
  std::shared_ptr<LockedMemoryAccount> account = std::make_shared<LockedMemoryAccount>(
      std::numeric_limits<uint64_t>::max());
  Type1Backend backend{account};
  BenchListener device;
  BenchListener holder;
  UniqueFd fd = MakeMemfd(kPinBatch * kPageSize);
  Mapping direct = Check(Mapping::Map(fd.get(), 0, kPinBatch * kPageSize,
                                      PROT_READ | PROT_WRITE, MAP_SHARED));

  PinSetup() {
    Check(backend.Map(FdRequest(fd, kIova, kPinBatch * kPageSize, 0)));
    Check(backend.AttachListener(device));
    Check(backend.AttachListener(holder));
  }
  void FaultIn() { std::memset(direct.data(), 3, direct.size()); }
  // Gives the pages back to the kernel so the next pin faults them in again.
  void Evict() {
    if (::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                    static_cast<off_t>(direct.size())) != 0) {
      std::abort();
    }
  }
  static PinSetup& Get() {
    static PinSetup setup;
    return setup;
  }
};

void SetPages(benchmark::State& state) {
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kPinBatch);
}

// First pin of resident pages: mlock + munlock of one run, plus bookkeeping.
void BM_PinUnpinResident(benchmark::State& state) {
  PinSetup& s = PinSetup::Get();
  s.FaultIn();
  for (auto _ : state) {
    Check(s.backend.PinPages(s.device, kIova, kPinBatch, kProtRead | kProtWrite));
    s.backend.UnpinPages(s.device, kIova, kPinBatch);
  }
  SetPages(state);
}
BENCHMARK(BM_PinUnpinResident)->MinTime(kMinTime);

// Pages another device holds pinned: refcounts only, no syscall.
void BM_PinUnpinAlreadyPinned(benchmark::State& state) {
  PinSetup& s = PinSetup::Get();
  Check(s.backend.PinPages(s.holder, kIova, kPinBatch, kProtRead));
  for (auto _ : state) {
    Check(s.backend.PinPages(s.device, kIova, kPinBatch, kProtRead | kProtWrite));
    s.backend.UnpinPages(s.device, kIova, kPinBatch);
  }
  s.backend.UnpinPages(s.holder, kIova, kPinBatch);
  SetPages(state);
}
BENCHMARK(BM_PinUnpinAlreadyPinned)->MinTime(kMinTime);

// Pin of pages not yet in memory (the cost a vendor sees on first touch),
// against mlock() of the same, equally absent, pages.
void BM_FirstPin(benchmark::State& state) {
  PinSetup& s = PinSetup::Get();
  for (auto _ : state) {
    state.PauseTiming();
    s.Evict();
    state.ResumeTiming();
    Check(s.backend.PinPages(s.device, kIova, kPinBatch, kProtRead | kProtWrite));
    state.PauseTiming();
    s.backend.UnpinPages(s.device, kIova, kPinBatch);
    state.ResumeTiming();
  }
  SetPages(state);
}
BENCHMARK(BM_FirstPin)->MinTime(kMinTime);

void BM_FirstMlock(benchmark::State& state) {
  PinSetup& s = PinSetup::Get();
  for (auto _ : state) {
    state.PauseTiming();
    s.Evict();
    state.ResumeTiming();
    if (::mlock(s.direct.data(), s.direct.size()) != 0) std::abort();
    state.PauseTiming();
    ::munlock(s.direct.data(), s.direct.size());
    state.ResumeTiming();
  }
  SetPages(state);
}
BENCHMARK(BM_FirstMlock)->MinTime(kMinTime);

// Map+unmap of one fd-backed page with |range(0)| mappings live, counting it.
void BM_MapUnmap(benchmark::State& state) {
  const int64_t live = state.range(0);
  TranslationSetup& s = TranslationSetup::Get(live - 1);
  const uint64_t iova = kIova + static_cast<uint64_t>(live) * kPageSize;
  for (auto _ : state) {
    Check(s.backend.Map(FdRequest(s.fd, iova, kPageSize, 0)));
    Check(s.backend.Unmap(iova, kPageSize));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_MapUnmap)->Arg(1000)->Arg(65535)->MinTime(kMinTime);

// Map, one 8-byte DmaRead, unmap, on a backend of 1000 mappings: the copy
// puts the mapping in this thread's translation cache, so the unmap
// invalidates (a process-wide membarrier and a look at each copying thread).
// Arg 1: every unmap invalidates (no budget); arg 0: the default budget,
// past which the backend stops caching for the rest of the second, so
// nearly no unmap does. The difference is what an invalidation costs.
void BM_MapCopyUnmap(benchmark::State& state) {
  auto account = std::make_shared<LockedMemoryAccount>();
  Type1Limits limits;
  if (state.range(0) == 1) limits.max_cache_invalidations_per_second = UINT32_MAX;
  Type1Backend backend(account, limits);
  UniqueFd fd = MakeMemfd(kPageSize);
  for (uint64_t i = 0; i < 999; ++i) Check(backend.Map(FdlessRequest(kIova + i * kPageSize, kPageSize)));
  const uint64_t iova = kIova + 1000 * kPageSize;
  std::byte out[8];
  for (auto _ : state) {
    Check(backend.Map(FdRequest(fd, iova, kPageSize, 0)));
    Check(backend.DmaRead(iova, out));
    Check(backend.Unmap(iova, kPageSize));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_MapCopyUnmap)->Arg(1)->Arg(0)->MinTime(kMinTime);

// Prints the console table, then the ratios the benchmark exists for: one
// run's numbers compared with each other, which a noisy machine keeps steady
// far better than absolute times.
class RatioReporter : public bench::RunTimesReporter {
 public:
  RatioReporter() : RunTimesReporter(/*full_names=*/true) {}
  void Finalize() override {
    ConsoleReporter::Finalize();
    auto& out = GetOutputStream();
    out << "\nRatios (higher is better for copies; time ratios say how many times slower):\n";
    for (int64_t size : kCopySizes) {
      const std::string arg = fmt::format("/{}/min_time:0.100", size);
      PrintRatio(out, fmt::format("DmaRead  {:>7} B speed / memcpy from guest", size),
                 "BM_Memcpy" + arg, "BM_DmaRead" + arg);
      PrintRatio(out, fmt::format("DmaWrite {:>7} B speed / memcpy to guest", size),
                 "BM_MemcpyToGuest" + arg, "BM_DmaWrite" + arg);
    }
    for (const char* count : {"1", "1000", "65535"}) {
      const std::string name = fmt::format("BM_Translate8B/{}/min_time:0.100", count);
      if (Ns(name) > 0) {
        out << fmt::format("8 B DmaRead, {:>5} mappings: {:7.1f} ns, {:5.2f}x memcpy of 8 B\n",
                           count, Ns(name), Ns(name) / Ns("BM_Memcpy/8/min_time:0.100"));
      }
    }
    PrintTime(out, "pin+unpin resident / already pinned", "BM_PinUnpinResident/min_time:0.100",
              "BM_PinUnpinAlreadyPinned/min_time:0.100");
    PrintTime(out, "first pin / first mlock (512 absent pages)", "BM_FirstPin/min_time:0.100",
              "BM_FirstMlock/min_time:0.100");
    PrintTime(out, "map+unmap at 65535 / at 1000 live mappings",
              "BM_MapUnmap/65535/min_time:0.100", "BM_MapUnmap/1000/min_time:0.100");
    // Both pay the first touch of a fresh mmap; they differ by the barrier.
    PrintTime(out, "map+copy+unmap, every unmap invalidating / within the default budget",
              "BM_MapCopyUnmap/1/min_time:0.100", "BM_MapCopyUnmap/0/min_time:0.100");
    if (Ns("BM_MapCopyUnmap/1/min_time:0.100") > 0 && Ns("BM_MapCopyUnmap/0/min_time:0.100") > 0) {
      out << fmt::format("cache invalidation (membarrier and reader scan): {:.1f} us per unmap\n",
                         (Ns("BM_MapCopyUnmap/1/min_time:0.100") - Ns("BM_MapCopyUnmap/0/min_time:0.100")) / 1000);
    }
    for (const char* name : {"BM_PinUnpinResident/min_time:0.100",
                             "BM_PinUnpinAlreadyPinned/min_time:0.100"}) {
      if (Ns(name) > 0) {
        out << fmt::format("{}: {:.2f} M pages/s\n", name, kPinBatch / Ns(name) * 1e3);
      }
    }
  }

 private:
  // Speed ratio: |base| time over |measured| time.
  void PrintRatio(std::ostream& out, const std::string& label, const std::string& base,
                  const std::string& measured) {
    if (Ns(base) > 0 && Ns(measured) > 0) {
      out << fmt::format("{}: {:.2f}\n", label, Ns(base) / Ns(measured));
    }
  }
  // Time ratio: |measured| time over |base| time.
  void PrintTime(std::ostream& out, const std::string& label, const std::string& measured,
                 const std::string& base) {
    if (Ns(base) > 0 && Ns(measured) > 0) {
      out << fmt::format("{}: {:.2f}x\n", label, Ns(measured) / Ns(base));
    }
  }

};

}  // namespace
}  // namespace umdev::pinning

int main(int argc, char** argv) {
  umdev::pinning::RegisterCopyBenchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  umdev::pinning::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
