// umdev-gpu: program a gpu slice from the software next to it
// (docs/gpu-guest.md). On the host it speaks vfio-user to the slice's
// socket, as umdev-probe takes its socket.
//   umdev-gpu --socket PATH [--polling] [--timeout MS] info|selftest|run|bench
// CLI11 2.1's string splitting trips g++ 12's -Wnull-dereference when inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "umdev/gpu_cli/gpu_commands.h"
#include "umdev/gpu_guest/vfio_user_transport.h"

namespace {

using umdev::gpu_guest::GpuRuntime;
using umdev::gpu_guest::WaitMode;

int Report(const umdev::Result<std::string>& result) {
  if (!result.has_value()) {
    std::cerr << "umdev-gpu: " << result.error().Describe() << "\n";
    return 1;
  }
  std::cout << *result;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Program a umdev gpu slice: information, a self test, SPIR-V, benchmarks"};
  std::string socket;
  bool polling = false;
  unsigned timeout_ms = 10'000;
  app.add_option("--socket", socket, "the slice's vfio-user socket")->required();
  app.add_flag("--polling", polling, "wait for fences by polling instead of interrupts");
  app.add_option("--timeout", timeout_ms, "longest wait for one submission, in ms");
  app.require_subcommand(1);

  auto* info = app.add_subcommand("info", "memory, share, engine, doorbell and counters");
  auto* selftest = app.add_subcommand("selftest", "a vector add and a reduction, checked");
  uint32_t elements = 65536;
  selftest->add_option("--elements", elements, "values per kernel (a multiple of 64)");
  auto* run = app.add_subcommand("run", "run one SPIR-V entry point once");
  umdev::gpu_cli::RunSpec spec;
  std::string groups = "1,1,1";
  std::vector<std::string> buffers, outputs;
  run->add_option("module", spec.module_path, "the SPIR-V module")->required();
  run->add_option("--entry", spec.entry, "the entry point (default main)");
  run->add_option("--groups", groups, "workgroups X[,Y[,Z]]");
  run->add_option("--buffer", buffers, "BINDING:BYTES[:INPUT_FILE], a storage buffer");
  run->add_option("--output", outputs, "BINDING:FILE, a buffer written out after the run");
  run->add_option("--push-u32", spec.push_u32, "a 32-bit push constant (in order)");
  auto* bench = app.add_subcommand("bench", "copy bandwidth, fence round trip, dispatch latency");
  unsigned bench_ms = 500;
  bench->add_option("--ms", bench_ms, "time per measurement");
  CLI11_PARSE(app, argc, argv);

  auto transport = umdev::gpu_guest::VfioUserTransport::Connect(socket);
  if (!transport.has_value()) return Report(std::unexpected(transport.error()));
  auto runtime = GpuRuntime::Open(std::move(*transport));
  if (!runtime.has_value()) return Report(std::unexpected(runtime.error()));
  (*runtime)->set_wait(polling ? WaitMode::kPolling : WaitMode::kInterrupt,
                       std::chrono::milliseconds(timeout_ms));
  GpuRuntime& gpu = **runtime;

  if (info->parsed()) return Report(umdev::gpu_cli::Info(gpu));
  if (selftest->parsed()) return Report(umdev::gpu_cli::Selftest(gpu, elements));
  if (bench->parsed()) {
    return Report(umdev::gpu_cli::Bench(gpu, std::chrono::milliseconds(bench_ms)));
  }
  // run
  unsigned parsed[3] = {1, 1, 1};
  if (std::sscanf(groups.c_str(), "%u,%u,%u", &parsed[0], &parsed[1], &parsed[2]) < 1) {
    std::cerr << "umdev-gpu: --groups " << groups << ": X[,Y[,Z]]\n";
    return 2;
  }
  for (int i = 0; i < 3; ++i) spec.groups[i] = parsed[i];
  for (const std::string& text : buffers) {
    auto buffer = umdev::gpu_cli::ParseRunBuffer(text);
    if (!buffer.has_value()) return Report(std::unexpected(buffer.error()));
    spec.buffers.push_back(*buffer);
  }
  for (const std::string& text : outputs) {
    const size_t colon = text.find(':');
    bool matched = false;
    for (auto& buffer : spec.buffers) {
      if (colon != std::string::npos && text.substr(0, colon) == std::to_string(buffer.binding)) {
        buffer.output = text.substr(colon + 1);
        matched = true;
      }
    }
    if (!matched) {
      std::cerr << "umdev-gpu: --output " << text << ": BINDING:FILE of a --buffer\n";
      return 2;
    }
  }
  return Report(umdev::gpu_cli::Run(gpu, spec));
}
