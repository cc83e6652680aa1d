// umdev-gpu's commands over a GpuRuntime (docs/gpu-guest.md): each returns
// the text it prints, or an error with what failed.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/gpu_guest/gpu_runtime.h"

namespace umdev::gpu_cli {

// The slice: memory, share, what its engine runs, the doorbell, counters.
Result<std::string> Info(gpu_guest::GpuRuntime& runtime);

// A vector add and a reduction of |elements| values, uploaded through the
// mapping and through ring COPYs, each result checked against the CPU.
// Errors: EIO a wrong result (the first one is named); the device's.
Result<std::string> Selftest(gpu_guest::GpuRuntime& runtime, uint32_t elements = 65536);

// One buffer of a `run`: BINDING:BYTES[:INPUT_FILE], downloaded to
// |output| after the run when that is set.
struct RunBuffer {
  uint32_t binding = 0;
  uint64_t bytes = 0;
  std::string input;   // Uploaded first; zero-filled when empty.
  std::string output;  // Written after the run; nothing when empty.
};
struct RunSpec {
  std::string module_path;  // SPIR-V
  std::string entry = "main";
  uint32_t groups[3] = {1, 1, 1};
  std::vector<RunBuffer> buffers;
  std::vector<uint32_t> push_u32;
};
// Loads the module, runs it once and reports its time. Errors: ENOENT/EIO
// the files; EINVAL a spec the device refuses; the device's.
Result<std::string> Run(gpu_guest::GpuRuntime& runtime, const RunSpec& spec);
// BINDING:BYTES[:INPUT] parsed. Errors: EINVAL.
Result<RunBuffer> ParseRunBuffer(const std::string& text);

// Copy bandwidth each way (ring COPYs of 1 MiB), small-dispatch latency and
// the fence round trip, each over |duration|.
Result<std::string> Bench(gpu_guest::GpuRuntime& runtime,
                          std::chrono::milliseconds duration = std::chrono::milliseconds(500));

}  // namespace umdev::gpu_cli
