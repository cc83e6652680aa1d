// Accelerator discovery through the Vulkan loader: llvmpipe is found with a
// compute queue and memory, and a host with no driver has no devices.
#include <cstdlib>
#include <optional>
#include <string>

#include <gtest/gtest.h>
#include <vulkan/vulkan.h>

#include "gpu_test_util.h"

namespace umdev::vendor::gpu {
namespace {

TEST(GpuDiscoveryTest, FindsAComputeDeviceWithMemory) {
  auto accelerators = DiscoverAccelerators();
  ASSERT_TRUE(accelerators.has_value()) << accelerators.error().Describe();
  if (accelerators->empty()) GTEST_SKIP() << testing::kNoVulkanMessage;
  for (const Accelerator& a : *accelerators) {
    EXPECT_FALSE(a.name.empty());
    EXPECT_FALSE(a.compute_queue_families.empty()) << a.name;
    EXPECT_FALSE(a.heaps.empty()) << a.name;
    EXPECT_GE(a.api_version, VK_API_VERSION_1_1) << a.name;
    if (!a.pci_address.empty()) {
      EXPECT_EQ(a.pci_address.size(), std::string("0000:00:00.0").size()) << a.pci_address;
    }
  }
}

TEST(GpuDiscoveryTest, FindsLlvmpipeAsACpuDevice) {
  auto accelerators = DiscoverAccelerators();
  ASSERT_TRUE(accelerators.has_value()) << accelerators.error().Describe();
  if (accelerators->empty()) GTEST_SKIP() << testing::kNoVulkanMessage;
  const Accelerator* llvmpipe = nullptr;
  for (const Accelerator& a : *accelerators) {
    if (a.name.find("llvmpipe") != std::string::npos) llvmpipe = &a;
  }
  if (llvmpipe == nullptr) GTEST_SKIP() << "Vulkan devices present, but not llvmpipe";
  EXPECT_EQ(llvmpipe->type, "cpu");
  EXPECT_EQ(llvmpipe->vendor_id, 0x10005u);  // VK_VENDOR_ID_MESA
  EXPECT_GT(llvmpipe->heaps.front().size, 0u);
  // A CPU device has no PCI function and no render node.
  EXPECT_EQ(llvmpipe->pci_address, "");
  EXPECT_EQ(llvmpipe->render_node, "");
}

TEST(GpuDiscoveryTest, NamesPhysicalDeviceTypes) {
  EXPECT_EQ(PhysicalDeviceTypeName(VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU), "discrete-gpu");
  EXPECT_EQ(PhysicalDeviceTypeName(VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU), "integrated-gpu");
  EXPECT_EQ(PhysicalDeviceTypeName(VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU), "virtual-gpu");
  EXPECT_EQ(PhysicalDeviceTypeName(VK_PHYSICAL_DEVICE_TYPE_CPU), "cpu");
  EXPECT_EQ(PhysicalDeviceTypeName(VK_PHYSICAL_DEVICE_TYPE_OTHER), "other");
}

// Points the loader at a driver manifest that does not exist for one scope,
// which is what a host without any Vulkan driver looks like to it.
class NoVulkanDrivers {
 public:
  NoVulkanDrivers() {
    for (const char* name : kVariables) {
      const char* value = std::getenv(name);
      saved_.push_back(value ? std::optional<std::string>(value) : std::nullopt);
      setenv(name, "/nonexistent/umdev-no-icd.json", 1);
    }
  }
  ~NoVulkanDrivers() {
    for (size_t i = 0; i < std::size(kVariables); ++i) {
      if (saved_[i]) {
        setenv(kVariables[i], saved_[i]->c_str(), 1);
      } else {
        unsetenv(kVariables[i]);
      }
    }
  }

 private:
  static constexpr const char* kVariables[] = {"VK_ICD_FILENAMES", "VK_DRIVER_FILES"};
  std::vector<std::optional<std::string>> saved_;
};

TEST(GpuDiscoveryTest, NoDriverMeansNoDevicesNotAnError) {
  NoVulkanDrivers no_drivers;
  auto accelerators = DiscoverAccelerators();
  ASSERT_TRUE(accelerators.has_value()) << accelerators.error().Describe();
  EXPECT_TRUE(accelerators->empty());
  auto engine = CreateVulkanEngine({});
  ASSERT_FALSE(engine.has_value());
  EXPECT_EQ(engine.error().code, ENODEV);
}

TEST(GpuDiscoveryTest, EngineForAMissingDeviceIsENODEV) {
  auto engine = CreateVulkanEngine({.device_index = 999});
  ASSERT_FALSE(engine.has_value());
  EXPECT_EQ(engine.error().code, ENODEV);
}

}  // namespace
}  // namespace umdev::vendor::gpu
