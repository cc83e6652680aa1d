// Check(): a benchmark's set-up cannot fail quietly; a failure aborts with
// the error's description and the binary's name.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <type_traits>
#include <utility>

#include "umdev/common/error.h"

namespace umdev::bench {

template <typename T>
T Check(Result<T> result) {
  if (!result.has_value()) {
    spdlog::critical("{}: {}", program_invocation_short_name, result.error().Describe());
    std::abort();
  }
  if constexpr (!std::is_void_v<T>) return std::move(result).value();
}

}  // namespace umdev::bench
