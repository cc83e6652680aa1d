// Template definitions for protocol.h; include protocol.h instead.
#pragma once

#include <cstring>
#include <type_traits>
#include <vector>

namespace umdev::vfio_user {

template <typename T>
std::optional<T> LoadPayload(std::span<const std::byte> bytes, size_t offset) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (offset > bytes.size() || bytes.size() - offset < sizeof(T)) return std::nullopt;
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

// Appends the bytes of |value| (a payload struct or an integer) to |out|.
template <typename T>
void AppendPod(std::vector<std::byte>& out, const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  const auto* first = reinterpret_cast<const std::byte*>(&value);
  out.insert(out.end(), first, first + sizeof(T));
}

inline void AppendBytes(std::vector<std::byte>& out, std::span<const std::byte> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

}  // namespace umdev::vfio_user
