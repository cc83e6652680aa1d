// umdev-gpu: program a gpu slice from the software next to it
// (docs/gpu-guest.md). On the host it speaks vfio-user to the slice's
// socket, as umdev-probe takes its socket; in a Linux guest it drives the
// slice's PCI function through the guest kernel's vfio-pci.
//   umdev-gpu (--socket PATH | --device BDF) [--polling] [--timeout MS]
//             info|selftest|run|bench|stress
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
#include "umdev/gpu_guest/vfio_pci_transport.h"
#include "umdev/gpu_guest/vfio_user_transport.h"

namespace {

using umdev::gpu_guest::GpuRuntime;
using umdev::gpu_guest::Transport;
using umdev::gpu_guest::WaitMode;

umdev::Result<std::unique_ptr<Transport>> Attach(const std::string& socket,
                                                 const std::string& device) {
  if (!device.empty()) {
    UMDEV_ASSIGN_OR_RETURN(auto transport, umdev::gpu_guest::VfioPciTransport::Open(device));
    return std::unique_ptr<Transport>(std::move(transport));
  }
  UMDEV_ASSIGN_OR_RETURN(auto transport, umdev::gpu_guest::VfioUserTransport::Connect(socket));
  return std::unique_ptr<Transport>(std::move(transport));
}

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
  std::string socket, device;
  bool polling = false;
  unsigned timeout_ms = 10'000;
  auto* socket_option = app.add_option("--socket", socket, "the slice's vfio-user socket (host)");
  auto* device_option =
      app.add_option("--device", device, "the slice's PCI address, bound to vfio-pci (guest)");
  socket_option->excludes(device_option);
  auto* where = app.add_option_group("slice", "where the slice is");
  where->add_option(socket_option);
  where->add_option(device_option);
  where->require_option(1);
  app.add_flag("--polling", polling, "wait for fences by polling instead of interrupts");
  app.add_option("--timeout", timeout_ms, "longest wait for one submission, in ms");
  app.require_subcommand(1);

  auto* info = app.add_subcommand("info", "memory, share, engine, doorbell and counters");
  auto* selftest = app.add_subcommand("selftest", "a vector add and a reduction, checked");
  uint32_t elements = 65536;
  bool faults = false;
  selftest->add_option("--elements", elements, "values per kernel (a multiple of 64)");
  selftest->add_flag("--faults", faults,
                     "also check that an out-of-bounds DISPATCH and a bad COPY are refused");
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
  auto* stress = app.add_subcommand("stress", "keep the slice busy with reductions, and report");
  unsigned stress_ms = 5000;
  uint32_t stress_elements = 1u << 20;
  uint32_t stress_batch = 8;
  stress->add_option("--ms", stress_ms, "how long");
  stress->add_option("--elements", stress_elements, "values per reduction (a multiple of 64)");
  stress->add_option("--batch", stress_batch, "dispatches per fence (1 .. 63)");
  CLI11_PARSE(app, argc, argv);

  auto transport = Attach(socket, device);
  if (!transport.has_value()) return Report(std::unexpected(transport.error()));
  auto runtime = GpuRuntime::Open(std::move(*transport));
  if (!runtime.has_value()) return Report(std::unexpected(runtime.error()));
  (*runtime)->set_wait(polling ? WaitMode::kPolling : WaitMode::kInterrupt,
                       std::chrono::milliseconds(timeout_ms));
  GpuRuntime& gpu = **runtime;

  if (info->parsed()) return Report(umdev::gpu_cli::Info(gpu));
  if (selftest->parsed()) {
    const int status = Report(umdev::gpu_cli::Selftest(gpu, elements));
    return status != 0 || !faults ? status : Report(umdev::gpu_cli::FaultCheck(gpu));
  }
  if (stress->parsed()) {
    return Report(umdev::gpu_cli::Stress(gpu, std::chrono::milliseconds(stress_ms),
                                         stress_elements, stress_batch));
  }
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
