// umdev-gpu's commands: info, selftest, run and bench over a GpuRuntime.
#include "umdev/gpu_cli/gpu_commands.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <fstream>
#include <iterator>
#include <numeric>

#include <fmt/format.h>

#include "spirv/reduce_sum_u32.h"
#include "spirv/vadd_u32.h"

namespace umdev::gpu_cli {
namespace {

using gpu_guest::Binding;
using gpu_guest::DispatchSpec;
using gpu_guest::GpuRuntime;
using gpu_guest::SliceRange;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kLocalSize = 64;  // The built-in kernels' workgroup width.

std::string HumanBytes(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 30) && bytes % (uint64_t{1} << 30) == 0) {
    return fmt::format("{} GiB", bytes >> 30);
  }
  if (bytes >= (uint64_t{1} << 20)) return fmt::format("{:.1f} MiB", bytes / 1048576.0);
  return fmt::format("{} KiB", bytes >> 10);
}

template <typename T>
std::vector<std::byte> Bytes(const std::vector<T>& values) {
  std::vector<std::byte> out(values.size() * sizeof(T));
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// Allocations freed when the scope ends, whatever happened.
class Scratch {
 public:
  explicit Scratch(GpuRuntime& runtime) : runtime_(runtime) {}
  ~Scratch() {
    for (const SliceRange& range : ranges_) runtime_.Free(range);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Result<SliceRange> Allocate(uint64_t bytes) {
    UMDEV_ASSIGN_OR_RETURN(const SliceRange range, runtime_.Allocate(bytes));
    ranges_.push_back(range);
    return range;
  }

 private:
  GpuRuntime& runtime_;
  std::vector<SliceRange> ranges_;
};

Result<std::vector<std::byte>> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Fail(ENOENT, "cannot open " + path);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

}  // namespace

Result<std::string> Info(GpuRuntime& runtime) {
  const gpu_guest::DeviceInfo& info = runtime.info();
  UMDEV_ASSIGN_OR_RETURN(const gpu_guest::DeviceCounters counters, runtime.Counters());
  std::string out;
  out += fmt::format("device:        {}\n", runtime.transport().Describe());
  out += fmt::format("version:       {}.{}\n", info.version >> 16, info.version & 0xffff);
  out += fmt::format("memory:        {} ({} bytes)\n", HumanBytes(info.memory), info.memory);
  out += fmt::format("compute share: {:.1f} %\n", info.compute_share_permille / 10.0);
  out += fmt::format("engine:        {}\n", info.runs_any_spirv()
                                                ? "runs any SPIR-V (Vulkan)"
                                                : "built-in kernels only (CPU)");
  out += fmt::format("slice access:  {}\n", info.slice_mappable() ? "mapped (BAR2)" : "trapped");
  out += fmt::format("doorbell:      {}\n",
                     info.doorbell_page() ? "polled page (BAR4)" : "trapped register");
  out += fmt::format("busy:          {:.3f} ms\n", counters.busy_ns / 1e6);
  out += fmt::format("commands:      {}\n", counters.commands);
  out += fmt::format("bytes:         {}\n", counters.bytes);
  out += fmt::format("errors:        {}\n", counters.errors);
  return out;
}

Result<std::string> Selftest(GpuRuntime& runtime, uint32_t elements) {
  if (elements == 0 || elements % kLocalSize != 0) {
    return Fail(EINVAL, fmt::format("selftest of {} elements (a multiple of {})", elements,
                                    kLocalSize));
  }
  Scratch scratch(runtime);
  const uint64_t bytes = uint64_t{elements} * 4;
  std::vector<uint32_t> a(elements), b(elements);
  for (uint32_t i = 0; i < elements; ++i) {
    a[i] = i * 2654435761u;
    b[i] = i ^ 0x5a5a5a5au;
  }
  UMDEV_ASSIGN_OR_RETURN(const SliceRange ra, scratch.Allocate(bytes));
  UMDEV_ASSIGN_OR_RETURN(const SliceRange rb, scratch.Allocate(bytes));
  UMDEV_ASSIGN_OR_RETURN(const SliceRange rc, scratch.Allocate(bytes));
  UMDEV_ASSIGN_OR_RETURN(const SliceRange rsum, scratch.Allocate(4));
  std::string out;

  // Vector add: one input through the mapping, one through a ring COPY.
  UMDEV_TRY(runtime.Upload(ra, Bytes(a)));
  UMDEV_TRY(runtime.UploadByCopy(rb, Bytes(b)));
  UMDEV_ASSIGN_OR_RETURN(const gpu_guest::Module vadd, runtime.LoadModule(umdev_spirv_vadd_u32));
  DispatchSpec spec;
  spec.groups = {elements / kLocalSize, 1, 1};
  spec.bindings = {Binding{0, ra}, Binding{1, rb}, Binding{2, rc}};
  spec.push_constants = Bytes(std::vector<uint32_t>{elements});
  auto start = Clock::now();
  Result<void> ran = runtime.Dispatch(vadd, "umdev_vadd_u32", spec);
  const auto vadd_time = Clock::now() - start;
  runtime.Unload(vadd);
  UMDEV_TRY(ran);
  std::vector<std::byte> got(bytes);
  UMDEV_TRY(runtime.DownloadByCopy(rc, got));
  for (uint32_t i = 0; i < elements; ++i) {
    uint32_t value;
    std::memcpy(&value, got.data() + uint64_t{i} * 4, 4);
    if (value != a[i] + b[i]) {
      return Fail(EIO, fmt::format("vector add: element {} is {:#x}, the CPU says {:#x}", i, value,
                                   a[i] + b[i]));
    }
  }
  out += fmt::format("vector add     {} elements  {:8.3f} ms  ok\n", elements,
                     std::chrono::duration<double, std::milli>(vadd_time).count());

  // Reduction of c into one word.
  UMDEV_TRY(runtime.Fill(rsum, 0));
  UMDEV_ASSIGN_OR_RETURN(const gpu_guest::Module reduce,
                         runtime.LoadModule(umdev_spirv_reduce_sum_u32));
  spec.bindings = {Binding{0, rc}, Binding{1, rsum}};
  start = Clock::now();
  ran = runtime.Dispatch(reduce, "umdev_reduce_sum_u32", spec);
  const auto reduce_time = Clock::now() - start;
  runtime.Unload(reduce);
  UMDEV_TRY(ran);
  uint32_t sum = 0;
  UMDEV_TRY(runtime.Download(rsum, std::as_writable_bytes(std::span(&sum, 1))));
  uint32_t expected = 0;
  for (uint32_t i = 0; i < elements; ++i) expected += a[i] + b[i];
  if (sum != expected) {
    return Fail(EIO, fmt::format("reduction: the device says {:#x}, the CPU {:#x}", sum, expected));
  }
  out += fmt::format("reduction      {} elements  {:8.3f} ms  ok\n", elements,
                     std::chrono::duration<double, std::milli>(reduce_time).count());
  out += "selftest passed\n";
  return out;
}

Result<std::string> FaultCheck(GpuRuntime& runtime) {
  namespace regs = vendor::gpu::regs;
  Scratch scratch(runtime);
  UMDEV_ASSIGN_OR_RETURN(const SliceRange target, scratch.Allocate(4096));
  std::string out;
  // Expects |result| to be the device's EFAULT.
  const auto expect_fault = [&out](std::string_view what, const Result<void>& result) -> Result<void> {
    if (result.has_value()) return Fail(EIO, fmt::format("{}: the device did not refuse it", what));
    if (result.error().code != EFAULT) {
      return Fail(EIO, fmt::format("{}: {} instead of EFAULT", what, result.error().Describe()));
    }
    out += fmt::format("{:<30} EFAULT  ok\n", what);
    return {};
  };
  UMDEV_ASSIGN_OR_RETURN(const gpu_guest::Module vadd, runtime.LoadModule(umdev_spirv_vadd_u32));
  DispatchSpec outside;
  outside.bindings = {Binding{0, target}, Binding{1, target},
                      Binding{2, {runtime.info().memory, 4096}}};
  outside.push_constants = Bytes(std::vector<uint32_t>{1024});
  const Result<void> dispatched = runtime.Dispatch(vadd, "umdev_vadd_u32", outside);
  runtime.Unload(vadd);
  UMDEV_TRY(expect_fault("out-of-bounds DISPATCH", dispatched));
  // Far above any IOVA a transport hands out: no DMA mapping covers it.
  constexpr uint64_t kUnmappedIova = uint64_t{0xdead} << 24;
  const regs::RingEntry copy = regs::RingEntry()
                                   .U32(regs::kEntryOpcode, regs::kOpCopy)
                                   .U32(regs::kEntryFlags, regs::kCopySrcGuest)
                                   .U64(regs::kCopySrc, kUnmappedIova)
                                   .U64(regs::kCopyDst, target.offset)
                                   .U64(regs::kCopySize, target.size);
  UMDEV_TRY(expect_fault("COPY from unmapped guest memory", runtime.Submit(std::span(&copy, 1))));
  UMDEV_ASSIGN_OR_RETURN(const std::string after, Selftest(runtime, 1024));
  out += after;
  return out;
}

Result<std::string> Stress(GpuRuntime& runtime, std::chrono::milliseconds duration,
                           uint32_t elements, uint32_t batch) {
  if (elements == 0 || elements % kLocalSize != 0) {
    return Fail(EINVAL, fmt::format("stress of {} elements (a multiple of {})", elements,
                                    kLocalSize));
  }
  Scratch scratch(runtime);
  UMDEV_ASSIGN_OR_RETURN(const SliceRange values, scratch.Allocate(uint64_t{elements} * 4));
  UMDEV_ASSIGN_OR_RETURN(const SliceRange sum, scratch.Allocate(4));
  UMDEV_TRY(runtime.Fill(values, 1));
  UMDEV_ASSIGN_OR_RETURN(const gpu_guest::Module reduce,
                         runtime.LoadModule(umdev_spirv_reduce_sum_u32));
  DispatchSpec spec;
  spec.groups = {elements / kLocalSize, 1, 1};
  spec.bindings = {Binding{0, values}, Binding{1, sum}};
  spec.push_constants = Bytes(std::vector<uint32_t>{elements});
  spec.repeat = batch;
  UMDEV_ASSIGN_OR_RETURN(const gpu_guest::DeviceCounters before, runtime.Counters());
  const auto start = Clock::now();
  uint64_t dispatches = 0;
  Result<void> ran;
  do {
    ran = runtime.Dispatch(reduce, "umdev_reduce_sum_u32", spec);
    if (ran) dispatches += batch;
  } while (ran && Clock::now() - start < duration);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  runtime.Unload(reduce);
  UMDEV_TRY(ran);
  UMDEV_ASSIGN_OR_RETURN(const gpu_guest::DeviceCounters after, runtime.Counters());
  const double busy = static_cast<double>(after.busy_ns - before.busy_ns) / 1e9;
  std::string out;
  out += fmt::format("dispatches       {} in {:.2f} s ({:.1f}/s, {} per fence)\n", dispatches,
                     seconds, static_cast<double>(dispatches) / seconds, batch);
  out += fmt::format("values reduced   {:.1f} M/s\n",
                     static_cast<double>(dispatches) * elements / seconds / 1e6);
  out += fmt::format("device busy      {:.3f} s, {:.1f} % of the time (share {:.1f} %)\n", busy,
                     100.0 * busy / seconds, runtime.info().compute_share_permille / 10.0);
  return out;
}

Result<RunBuffer> ParseRunBuffer(const std::string& text) {
  RunBuffer buffer;
  const size_t first = text.find(':');
  if (first == std::string::npos) {
    return Fail(EINVAL, "--buffer " + text + ": BINDING:BYTES[:INPUT_FILE]");
  }
  const size_t second = text.find(':', first + 1);
  const std::string binding = text.substr(0, first);
  const std::string bytes =
      text.substr(first + 1, second == std::string::npos ? std::string::npos : second - first - 1);
  const auto parse = [](const std::string& s, auto& value) {
    auto [end, error] = std::from_chars(s.data(), s.data() + s.size(), value);
    return !s.empty() && error == std::errc() && end == s.data() + s.size();
  };
  if (!parse(binding, buffer.binding) || !parse(bytes, buffer.bytes) || buffer.bytes == 0 ||
      buffer.bytes % 4 != 0) {
    return Fail(EINVAL, "--buffer " + text + ": BINDING:BYTES[:INPUT_FILE], BYTES a multiple of 4");
  }
  if (second != std::string::npos) buffer.input = text.substr(second + 1);
  return buffer;
}

Result<std::string> Run(GpuRuntime& runtime, const RunSpec& spec) {
  UMDEV_ASSIGN_OR_RETURN(const std::vector<std::byte> code, ReadFile(spec.module_path));
  if (code.empty() || code.size() % 4 != 0) {
    return Fail(EINVAL, fmt::format("{}: {} bytes is not SPIR-V", spec.module_path, code.size()));
  }
  std::vector<uint32_t> words(code.size() / 4);
  std::memcpy(words.data(), code.data(), code.size());
  Scratch scratch(runtime);
  DispatchSpec dispatch;
  dispatch.groups = {spec.groups[0], spec.groups[1], spec.groups[2]};
  dispatch.push_constants = Bytes(spec.push_u32);
  for (const RunBuffer& buffer : spec.buffers) {
    UMDEV_ASSIGN_OR_RETURN(const SliceRange range, scratch.Allocate(buffer.bytes));
    std::vector<std::byte> data(buffer.bytes, std::byte{0});
    if (!buffer.input.empty()) {
      UMDEV_ASSIGN_OR_RETURN(const std::vector<std::byte> input, ReadFile(buffer.input));
      std::copy_n(input.begin(), std::min<size_t>(input.size(), data.size()), data.begin());
    }
    UMDEV_TRY(runtime.Upload(range, data));
    dispatch.bindings.push_back(Binding{buffer.binding, range});
  }
  UMDEV_ASSIGN_OR_RETURN(const gpu_guest::Module module, runtime.LoadModule(words));
  const auto start = Clock::now();
  Result<void> ran = runtime.Dispatch(module, spec.entry, dispatch);
  const auto took = Clock::now() - start;
  runtime.Unload(module);
  UMDEV_TRY(ran);
  std::string out = fmt::format("{} {}: {} x {} x {} groups in {:.3f} ms\n", spec.module_path,
                                spec.entry, spec.groups[0], spec.groups[1], spec.groups[2],
                                std::chrono::duration<double, std::milli>(took).count());
  for (size_t i = 0; i < spec.buffers.size(); ++i) {
    if (spec.buffers[i].output.empty()) continue;
    std::vector<std::byte> data(spec.buffers[i].bytes);
    UMDEV_TRY(runtime.Download(dispatch.bindings[i].range, data));
    std::ofstream file(spec.buffers[i].output, std::ios::binary | std::ios::trunc);
    file.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    if (!file) return Fail(EIO, "cannot write " + spec.buffers[i].output);
    out += fmt::format("binding {}: {} bytes to {}\n", spec.buffers[i].binding, data.size(),
                       spec.buffers[i].output);
  }
  return out;
}

Result<std::string> Bench(GpuRuntime& runtime, std::chrono::milliseconds duration) {
  Scratch scratch(runtime);
  const uint64_t chunk = uint64_t{1} << 20;
  UMDEV_ASSIGN_OR_RETURN(const SliceRange buffer, scratch.Allocate(chunk));
  std::vector<std::byte> host(chunk, std::byte{0x5a});
  // Runs |step| repeatedly for |duration|; returns calls per second.
  const auto measure = [&](auto step) -> Result<double> {
    const auto start = Clock::now();
    uint64_t calls = 0;
    do {
      UMDEV_TRY(step());
      ++calls;
    } while (Clock::now() - start < duration);
    return static_cast<double>(calls) /
           std::chrono::duration<double>(Clock::now() - start).count();
  };
  UMDEV_ASSIGN_OR_RETURN(const double up,
                         measure([&] { return runtime.UploadByCopy(buffer, host); }));
  UMDEV_ASSIGN_OR_RETURN(const double down,
                         measure([&] { return runtime.DownloadByCopy(buffer, host); }));
  UMDEV_ASSIGN_OR_RETURN(const double fences, measure([&] { return runtime.Sync(); }));
  // The smallest dispatch: one workgroup of the vector add.
  UMDEV_ASSIGN_OR_RETURN(const SliceRange small, scratch.Allocate(3 * 256));
  UMDEV_ASSIGN_OR_RETURN(const gpu_guest::Module vadd, runtime.LoadModule(umdev_spirv_vadd_u32));
  DispatchSpec spec;
  spec.bindings = {Binding{0, {small.offset, 256}}, Binding{1, {small.offset + 256, 256}},
                   Binding{2, {small.offset + 512, 256}}};
  spec.push_constants = Bytes(std::vector<uint32_t>{kLocalSize});
  auto dispatches = measure([&] { return runtime.Dispatch(vadd, "umdev_vadd_u32", spec); });
  runtime.Unload(vadd);
  UMDEV_TRY(dispatches);
  std::string out;
  out += fmt::format("copy to device    {:9.1f} MiB/s  (1 MiB ring COPYs)\n", up);
  out += fmt::format("copy from device  {:9.1f} MiB/s\n", down);
  out += fmt::format("fence round trip  {:9.1f} us\n", 1e6 / fences);
  out += fmt::format("small dispatch    {:9.1f} us  (vadd of 64 elements, fence included)\n",
                     1e6 / *dispatches);
  return out;
}

}  // namespace umdev::gpu_cli
