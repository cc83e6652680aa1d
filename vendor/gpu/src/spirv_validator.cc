#include "spirv_validator.h"

#include <vulkan/vulkan.h>

#include <cerrno>

#include <fmt/format.h>
#include <spirv-tools/libspirv.hpp>

namespace umdev::vendor::gpu {
namespace {

spv_target_env TargetEnvFor(uint32_t api_version) {
  const uint32_t minor = VK_API_VERSION_MINOR(api_version);
  if (VK_API_VERSION_MAJOR(api_version) > 1 || minor >= 3) return SPV_ENV_VULKAN_1_3;
  if (minor == 2) return SPV_ENV_VULKAN_1_2;
  if (minor == 1) return SPV_ENV_VULKAN_1_1;
  return SPV_ENV_VULKAN_1_0;
}

std::string FirstLine(std::string_view text) {
  return std::string(text.substr(0, text.find('\n')));
}

}  // namespace

SpirvValidator::SpirvValidator(uint32_t vulkan_api_version)
    : target_env_(TargetEnvFor(vulkan_api_version)) {}

std::string SpirvValidator::RunValidator(std::span<const uint32_t> words) const {
  // One SpirvTools per call: its message consumer is per object, and the
  // object is cheap next to the validation itself.
  spvtools::SpirvTools tools(static_cast<spv_target_env>(target_env_));
  std::string first_message;
  tools.SetMessageConsumer([&](spv_message_level_t level, const char*,
                               const spv_position_t& position, const char* message) {
    if (!first_message.empty() || level > SPV_MSG_ERROR) return;
    first_message = fmt::format("word {}: {}", position.index, FirstLine(message));
  });
  spvtools::ValidatorOptions options;
  if (tools.Validate(words.data(), words.size(), options)) return {};
  return first_message.empty() ? std::string("invalid module") : first_message;
}

Result<void> SpirvValidator::Validate(std::span<const uint32_t> words) {
  const bool cacheable = words.size_bytes() <= kMaxCachedModuleBytes;
  std::string key;
  if (cacheable) {
    key.assign(reinterpret_cast<const char*>(words.data()), words.size_bytes());
    MutexLock lock(mu_);
    if (auto it = verdicts_.find(key); it != verdicts_.end()) {
      if (it->second.empty()) return {};
      return Fail(EINVAL, "SPIR-V module fails validation: " + it->second);
    }
  }
  std::string verdict = RunValidator(words);
  {
    MutexLock lock(mu_);
    ++validations_run_;
    if (cacheable) {
      if (verdicts_.size() >= kMaxCachedVerdicts) verdicts_.erase(verdicts_.begin());
      verdicts_.emplace(std::move(key), verdict);
    }
  }
  if (verdict.empty()) return {};
  return Fail(EINVAL, "SPIR-V module fails validation: " + verdict);
}

uint64_t SpirvValidator::validations_run() {
  MutexLock lock(mu_);
  return validations_run_;
}

}  // namespace umdev::vendor::gpu
