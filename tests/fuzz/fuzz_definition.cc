// libFuzzer target: mdevctl definition files (DIR/mdevctl.d/PARENT/UUID and
// umdevctl --jsonfile). A definition that parses must survive a round trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "umdev/control/definition.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace umdev::control;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto json = ParseJsonText(text);
  if (!json.has_value()) return 0;
  auto definition = ParseDefinition(*json);
  if (!definition.has_value()) return 0;
  auto again = ParseDefinition(nlohmann::json::parse(DefinitionToJson(*definition).dump()));
  if (!again.has_value() || !(*again == *definition)) std::abort();
  return 0;
}
