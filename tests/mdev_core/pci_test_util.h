// Shared helpers for the PciConfigSpace tests.
#pragma once

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <cstdint>
#include <vector>

#include "umdev/mdev_core/pci_config_space.h"

namespace umdev::pci_test {

inline constexpr PciHeaderSpec kHeader{.vendor_id = 0x1af4,
                                       .device_id = 0x10f1,
                                       .subsystem_vendor_id = 0x8086,
                                       .subsystem_id = 0x5a5a,
                                       .revision_id = 0x07,
                                       .base_class = 0x07,  // Simple communication controller.
                                       .sub_class = 0x00,   // Serial.
                                       .prog_if = 0x02,     // 16550.
                                       .multifunction = false};

// The errno of a failed call, or 0 on success (so a wrong success fails the
// expectation instead of reading error() from a value).
template <typename T>
int ErrnoOf(const Result<T>& result) {
  return result.has_value() ? 0 : result.error().code;
}

inline uint32_t Read32(const PciConfigSpace& config, uint64_t offset) {
  auto value = config.Read32(offset);
  EXPECT_TRUE(value.has_value()) << value.error().Describe();
  return value.value_or(0xdeadbeef);
}

inline uint16_t Read16(const PciConfigSpace& config, uint64_t offset) {
  auto value = config.Read16(offset);
  EXPECT_TRUE(value.has_value()) << value.error().Describe();
  return value.value_or(0xdead);
}

inline uint8_t Read8(const PciConfigSpace& config, uint64_t offset) {
  auto value = config.Read8(offset);
  EXPECT_TRUE(value.has_value()) << value.error().Describe();
  return value.value_or(0xde);
}

// Sizes a BAR the way an OS does: write all ones, read back.
inline uint32_t SizeProbe(PciConfigSpace& config, uint32_t offset) {
  EXPECT_TRUE(config.Write32(offset, 0xffffffff).has_value());
  return Read32(config, offset);
}

// Walks the list from 0x34 as an OS does; stops after 48 entries (the most
// that fit in 0x40..0xff) so a loop in the list fails the test instead of hanging.
inline std::vector<uint8_t> CapabilityIds(const PciConfigSpace& config,
                                          std::vector<uint8_t>* offsets) {
  std::vector<uint8_t> ids;
  uint8_t next = Read8(config, PCI_CAPABILITY_LIST);
  for (int hops = 0; next != 0 && hops < 48; ++hops) {
    ids.push_back(Read8(config, next + PCI_CAP_LIST_ID));
    if (offsets != nullptr) offsets->push_back(next);
    next = Read8(config, next + PCI_CAP_LIST_NEXT);
  }
  EXPECT_EQ(next, 0) << "capability list does not terminate";
  return ids;
}
}  // namespace umdev::pci_test
