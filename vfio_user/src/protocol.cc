// vfio-user command names and the VERSION capability JSON.
#include "umdev/vfio_user/protocol.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <array>

namespace umdev::vfio_user {
namespace {

constexpr std::array<std::string_view, 19> kNames = {
    "",          "VERSION",       "DMA_MAP",           "DMA_UNMAP",     "DEVICE_GET_INFO",
    "DEVICE_GET_REGION_INFO",     "DEVICE_GET_REGION_IO_FDS",         "DEVICE_GET_IRQ_INFO",
    "DEVICE_SET_IRQS",            "REGION_READ",       "REGION_WRITE",  "DMA_READ",
    "DMA_WRITE", "DEVICE_RESET",  "",                  "REGION_WRITE_MULTI",
    "DEVICE_FEATURE",             "MIG_DATA_READ",     "MIG_DATA_WRITE"};

// Reads an unsigned number capability into |out|, keeping the default when absent.
template <typename T>
Result<void> ReadNumber(const nlohmann::json& caps, const char* key, T& out) {
  auto it = caps.find(key);
  if (it == caps.end()) return {};
  if (!it->is_number_unsigned()) {
    return Fail(EINVAL, fmt::format("version: capability \"{}\" is not an unsigned number", key));
  }
  const uint64_t value = it->get<uint64_t>();
  if (value > std::numeric_limits<T>::max()) {
    return Fail(EINVAL, fmt::format("version: capability \"{}\" is out of range", key));
  }
  out = static_cast<T>(value);
  return {};
}

}  // namespace

std::string CommandName(uint16_t command) {
  if (command < kNames.size() && !kNames[command].empty()) return std::string(kNames[command]);
  return fmt::format("UNKNOWN({})", command);
}

Result<Capabilities> ParseCapabilities(std::span<const std::byte> json) {
  if (json.empty() || json.back() != std::byte{0}) {
    return Fail(EINVAL, "version: capabilities are not NUL-terminated");
  }
  const auto* text = reinterpret_cast<const char*>(json.data());
  // Everything up to the first NUL; bytes after an early NUL are ignored, as
  // a C string reader would.
  const std::string_view view(text, std::char_traits<char>::length(text));
  Capabilities caps;
  if (view.empty()) return caps;  // No JSON at all: every default.
  const auto doc = nlohmann::json::parse(view, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Fail(EINVAL, "version: capabilities are not a JSON object");
  }
  auto top = doc.find("capabilities");
  if (top == doc.end()) return caps;
  if (!top->is_object()) return Fail(EINVAL, "version: \"capabilities\" is not an object");
  UMDEV_TRY(ReadNumber(*top, "max_msg_fds", caps.max_msg_fds));
  UMDEV_TRY(ReadNumber(*top, "max_data_xfer_size", caps.max_data_xfer_size));
  UMDEV_TRY(ReadNumber(*top, "pgsizes", caps.pgsizes));
  UMDEV_TRY(ReadNumber(*top, "max_dma_maps", caps.max_dma_maps));
  if (auto it = top->find("write_multiple"); it != top->end()) {
    if (!it->is_boolean()) return Fail(EINVAL, "version: \"write_multiple\" is not a boolean");
    caps.write_multiple = it->get<bool>();
  }
  if (auto it = top->find("twin_socket"); it != top->end()) {
    if (!it->is_object()) return Fail(EINVAL, "version: \"twin_socket\" is not an object");
    auto supported = it->find("supported");
    if (supported != it->end()) {
      if (!supported->is_boolean()) {
        return Fail(EINVAL, "version: \"twin_socket.supported\" is not a boolean");
      }
      caps.twin_socket = supported->get<bool>();
    }
  }
  // "migration" (spec <= 0.9.1, still sent by QEMU) and unknown keys: ignored.
  return caps;
}

std::string FormatCapabilities(const Capabilities& caps) {
  nlohmann::json body = {
      {"max_msg_fds", caps.max_msg_fds},
      {"max_data_xfer_size", caps.max_data_xfer_size},
      {"pgsizes", caps.pgsizes},
      {"max_dma_maps", caps.max_dma_maps},
  };
  if (caps.write_multiple) body["write_multiple"] = true;
  if (caps.twin_socket) body["twin_socket"] = {{"supported", true}, {"fd_index", 0}};
  std::string text = nlohmann::json{{"capabilities", body}}.dump();
  text.push_back('\0');
  return text;
}

}  // namespace umdev::vfio_user
