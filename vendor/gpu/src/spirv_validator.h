// SpirvValidator: SPIRV-Tools' validator (what spirv-val runs) for the
// Vulkan environment of one device, with a small cache of verdicts, since a
// guest re-dispatches the same module over and over.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"

namespace umdev::vendor::gpu {

// Thread-safe.
class SpirvValidator {
 public:
  // Modules up to this size have their verdict cached, at most this many.
  static constexpr size_t kMaxCachedModuleBytes = 64 << 10;
  static constexpr size_t kMaxCachedVerdicts = 64;

  // |vulkan_api_version|: VK_MAKE_API_VERSION of the device as the engine
  // uses it; selects SPV_ENV_VULKAN_1_x.
  explicit SpirvValidator(uint32_t vulkan_api_version);

  // EINVAL with the validator's first message when the module is invalid.
  Result<void> Validate(std::span<const uint32_t> words);

  // Validations actually run (cache misses), for tests.
  uint64_t validations_run();

 private:
  // Empty when valid, else the validator's first message.
  std::string RunValidator(std::span<const uint32_t> words) const;

  const int target_env_;  // spv_target_env
  Mutex mu_;
  // Keyed by the module's bytes, so a colliding hash can never borrow
  // another module's verdict.
  std::unordered_map<std::string, std::string> verdicts_ UMDEV_GUARDED_BY(mu_);
  uint64_t validations_run_ UMDEV_GUARDED_BY(mu_) = 0;
};

}  // namespace umdev::vendor::gpu
