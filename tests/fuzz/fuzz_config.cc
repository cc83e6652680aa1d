// libFuzzer target: the daemon configuration (umdevd --config FILE).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "umdev/daemon/daemon.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)umdev::daemon::ParseConfig(text);
  return 0;
}
