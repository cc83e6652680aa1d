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

// Faults the device must report, not survive silently: an out-of-bounds
// DISPATCH and a COPY from guest memory the device cannot reach (an IOVA
// nothing maps) each fail with the device's EFAULT, and a vector add
// after them is still right. Errors: EIO a fault that went unreported, or
// a wrong result after them; the device's other errors.
Result<std::string> FaultCheck(gpu_guest::GpuRuntime& runtime);

// Keeps the slice busy for |duration| with reductions of |elements| values,
// |batch| dispatches per fence, and reports the dispatch rate and how busy
// the device was against its compute share.
Result<std::string> Stress(gpu_guest::GpuRuntime& runtime, std::chrono::milliseconds duration,
                           uint32_t elements = 1u << 20, uint32_t batch = 8);

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
