// GpuParent: fixed-fraction types, memory/share accounting, placement, the
// config entry, and a device created through Probe().
#include <nlohmann/json.hpp>

#include "gpu_device_test_util.h"
#include "umdev/vendor/gpu/gpu_parent.h"

namespace umdev::vendor::gpu::testing {
namespace {

constexpr uint64_t kParentMemory = 64 << 20;

std::shared_ptr<GpuParent> CpuParent(Placement placement = Placement::kHeterogeneous) {
  auto parent = GpuParent::Create({.parent_name = "gpu-cpu", .engine = EngineKind::kCpu,
                                   .memory = kParentMemory, .placement = placement});
  EXPECT_TRUE(parent.has_value()) << parent.error().Describe();
  return parent.value_or(nullptr);
}

TEST(GpuParentTest, TypesAreFractionsWithTheirMemoryAndShare) {
  auto parent = CpuParent();
  ASSERT_NE(parent, nullptr);
  EXPECT_EQ(parent->driver_name(), "gpu");
  const auto types = parent->types();
  ASSERT_EQ(types.size(), 4u);
  EXPECT_EQ(types[0].sysfs_name, "1of1");
  EXPECT_EQ(types[0].description, "memory=64M\ncompute_share=100%");
  EXPECT_EQ(types[1].description, "memory=32M\ncompute_share=50%");
  EXPECT_EQ(types[3].sysfs_name, "1of8");
  EXPECT_EQ(types[3].description, "memory=8M\ncompute_share=12.5%");
  for (const auto& t : types) EXPECT_GT(parent->AvailableInstances(t), 0u) << t.sysfs_name;
  EXPECT_EQ(parent->AvailableInstances(TypeNamed(*parent, "1of4")), 4u);
}

TEST(GpuParentTest, HeterogeneousPlacementAccountsMemoryAndShare) {
  auto parent = CpuParent();
  NoDma dma;
  auto half = Create(*parent, "1of2", dma);
  ASSERT_TRUE(half.has_value()) << half.error().Describe();
  auto* device = dynamic_cast<GpuDevice*>(half->get());
  ASSERT_NE(device, nullptr);
  uint32_t share = 0;
  ASSERT_TRUE(device->RegionRead(VFIO_PCI_BAR0_REGION_INDEX, kRegComputeShare,
                                 std::as_writable_bytes(std::span(&share, 1))).has_value());
  EXPECT_EQ(share, 500u);
  uint64_t mem = 0;
  ASSERT_TRUE(device->RegionRead(VFIO_PCI_BAR0_REGION_INDEX, kRegMemSize,
                                 std::as_writable_bytes(std::span(&mem, 1))).has_value());
  EXPECT_EQ(mem, kParentMemory / 2);
  EXPECT_EQ(parent->engine()->memory_allocated(), kParentMemory / 2);

  EXPECT_EQ(parent->AvailableInstances(TypeNamed(*parent, "1of1")), 0u);
  EXPECT_EQ(parent->AvailableInstances(TypeNamed(*parent, "1of2")), 1u);
  EXPECT_EQ(parent->AvailableInstances(TypeNamed(*parent, "1of8")), 4u);
  auto quarter = Create(*parent, "1of4", dma);
  auto eighth = Create(*parent, "1of8", dma);
  ASSERT_TRUE(quarter.has_value());
  ASSERT_TRUE(eighth.has_value());
  EXPECT_EQ(parent->free_eighths(), 1u);
  EXPECT_EQ(Create(*parent, "1of4", dma).error().code, ENOSPC);
  EXPECT_EQ(Create(*parent, "1of1", dma).error().code, ENOSPC);
  EXPECT_EQ(parent->AvailableInstances(TypeNamed(*parent, "1of8")), 1u);
  // Removing an instance returns its memory and share.
  half->reset();
  EXPECT_EQ(parent->free_eighths(), 5u);
  EXPECT_EQ(parent->AvailableInstances(TypeNamed(*parent, "1of2")), 1u);
  EXPECT_EQ(parent->engine()->memory_allocated(), kParentMemory * 3 / 8);
  EXPECT_EQ(parent->Probe(ProbeContext{.type = MdevTypeSpec{.sysfs_name = "3of8"},
                                       .uuid = Uuid{}, .dma = dma})
                .error()
                .code,
            EINVAL);
}

TEST(GpuParentTest, HomogeneousPlacementFixesTheType) {
  auto parent = CpuParent(Placement::kHomogeneous);
  NoDma dma;
  auto first = Create(*parent, "1of4", dma);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(parent->AvailableInstances(TypeNamed(*parent, "1of4")), 3u);
  EXPECT_EQ(parent->AvailableInstances(TypeNamed(*parent, "1of8")), 0u);
  EXPECT_EQ(Create(*parent, "1of8", dma).error().code, ENOSPC);
  first->reset();
  // Empty again: any type.
  EXPECT_EQ(parent->AvailableInstances(TypeNamed(*parent, "1of8")), 8u);
  EXPECT_TRUE(Create(*parent, "1of8", dma).has_value());
}

TEST(GpuParentTest, DevicesOutliveTheirParent) {
  auto parent = CpuParent();
  NoDma dma;
  auto device = Create(*parent, "1of8", dma);
  ASSERT_TRUE(device.has_value());
  parent.reset();
  uint32_t id = 0;
  ASSERT_TRUE((*device)->RegionRead(VFIO_PCI_BAR0_REGION_INDEX, kRegId,
                                    std::as_writable_bytes(std::span(&id, 1))).has_value());
  EXPECT_EQ(id, kIdValue);
  device->reset();
}

TEST(GpuParentTest, ConfigEntry) {
  auto parent = MakeGpuParentFromConfig(nlohmann::json::parse(
      R"({"driver":"gpu","engine":"cpu","memory":"16M","placement":"homogeneous",
          "pci_id":"1234:5678"})"));
  ASSERT_TRUE(parent.has_value()) << parent.error().Describe();
  EXPECT_EQ((*parent)->parent_name(), "gpu-cpu");
  EXPECT_EQ((*parent)->types()[0].description, "memory=16M\ncompute_share=100%");
  NoDma dma;
  auto device = (*parent)->Probe(ProbeContext{.type = (*parent)->types()[0], .uuid = Uuid{},
                                              .dma = dma});
  ASSERT_TRUE(device.has_value());
  uint32_t ids = 0;
  ASSERT_TRUE((*device)->RegionRead(VFIO_PCI_CONFIG_REGION_INDEX, 0,
                                    std::as_writable_bytes(std::span(&ids, 1))).has_value());
  EXPECT_EQ(ids, 0x56781234u);
  device->reset();

  for (const char* bad : {R"({"driver":"gpu","engine":"tpu"})",
                          R"({"driver":"gpu","engine":"cpu","memory":"12X"})",
                          R"({"driver":"gpu","engine":"cpu","memory":4096})",
                          R"({"driver":"gpu","engine":"cpu","pci_id":"12345678"})",
                          R"({"driver":"gpu","engine":"cpu","device":0})",
                          R"({"driver":"gpu","engine":"cpu","colour":"red"})",
                          R"({"driver":"gpu","dispatch_timeout_ms":0})",
                          R"({"driver":"gpu","dispatch_timeout_ms":"2s"})",
                          R"({"driver":"gpu","dispatch_timeout_ms":60001})",
                          R"({"driver":"gpu","engine":"cpu","doorbell_spin_us":100001})",
                          R"({"driver":"gpu","engine":"cpu","doorbell_spin_us":-1})",
                          R"({"driver":"gpu","engine":"cpu","doorbell_spin_us":"1ms"})",
                          // The CPU engine's built-in kernels always end.
                          R"({"driver":"gpu","engine":"cpu","dispatch_timeout_ms":500})"}) {
    auto refused = MakeGpuParentFromConfig(nlohmann::json::parse(bad));
    ASSERT_FALSE(refused.has_value()) << bad;
    EXPECT_EQ(refused.error().code, EINVAL) << bad;
  }
}

// doorbell_spin_us: the instances' doorbell page and its poller; 0 takes
// the page away (every doorbell traps).
TEST(GpuParentTest, DoorbellSpinFromTheConfigEntry) {
  NoDma dma;
  for (const auto& [spin, page] : {std::pair{"", true}, std::pair{",\"doorbell_spin_us\":0", false},
                                   std::pair{",\"doorbell_spin_us\":100000", true}}) {
    auto parent = MakeGpuParentFromConfig(nlohmann::json::parse(
        std::string(R"({"driver":"gpu","engine":"cpu","memory":"16M")") + spin + "}"));
    ASSERT_TRUE(parent.has_value()) << parent.error().Describe();
    auto device = (*parent)->Probe(ProbeContext{.type = (*parent)->types()[0], .uuid = Uuid{},
                                                .dma = dma});
    ASSERT_TRUE(device.has_value());
    uint32_t caps = 0;
    ASSERT_TRUE((*device)->RegionRead(VFIO_PCI_BAR0_REGION_INDEX, kRegCaps,
                                      std::as_writable_bytes(std::span(&caps, 1))).has_value());
    EXPECT_EQ((caps & kCapDoorbellPage) != 0, page) << spin;
    EXPECT_EQ((*device)->GetRegionInfo(VFIO_PCI_BAR4_REGION_INDEX)->size,
              page ? kDoorbellPageSize : 0u) << spin;
    EXPECT_EQ(*(*parent)->ReadAttribute("doorbell_rings"), "0");
    EXPECT_EQ(*(*parent)->ReadAttribute("doorbell_polling_ns"), "0");
    device->reset();
  }
  auto parent = MakeGpuParentFromConfig(nlohmann::json::parse(
      R"({"driver":"gpu","engine":"cpu","memory":"16M","doorbell_spin_us":750})"));
  ASSERT_TRUE(parent.has_value());
  EXPECT_EQ(*(*parent)->ReadAttribute("doorbell_spin_us"), "750");
}

TEST(GpuParentTest, ConfigEntryForAVulkanDevice) {
  if (PickTestDevice() < 0) GTEST_SKIP() << kNoVulkanMessage;
  auto parent = MakeGpuParentFromConfig(
      nlohmann::json::parse(R"({"driver":"gpu","device":"llvmpipe","memory":"32M",
                                "dispatch_timeout_ms":500})"));
  if (!parent.has_value() && parent.error().code == ENODEV) GTEST_SKIP() << "no llvmpipe";
  ASSERT_TRUE(parent.has_value()) << parent.error().Describe();
  EXPECT_EQ((*parent)->driver_name(), "gpu");
  auto missing = MakeGpuParentFromConfig(
      nlohmann::json::parse(R"({"driver":"gpu","device":"no such accelerator"})"));
  EXPECT_EQ(missing.error().code, ENODEV);
}

}  // namespace
}  // namespace umdev::vendor::gpu::testing
