// A registry with a migratable test parent and helpers to open its devices.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>

#include "fakes/fake_iommu.h"
#include "fakes/test_parent.h"
#include "umdev/mdev_core/registry.h"

namespace umdev::testing {

inline const Uuid& kMigUuid1 = kUuid1;
inline const Uuid& kMigUuid2 = kUuid2;

// Two devices (kMigUuid1, kMigUuid2) of a parent with |features|, each
// opened in its own container on demand.
class MigrationFixture {
 public:
  explicit MigrationFixture(TestDevice::Features features)
      : parent_(std::make_shared<TestParentDriver>(TestParentDriver::Options{.features = features})) {
    EXPECT_TRUE(registry_.iommu_drivers().Register(iommu_driver_).has_value());
    EXPECT_TRUE(registry_.RegisterParent(parent_).has_value());
    EXPECT_TRUE(registry_.CreateMdev("test_parent", "test-a", kMigUuid1).has_value());
    EXPECT_TRUE(registry_.CreateMdev("test_parent", "test-a", kMigUuid2).has_value());
  }

  // A device handle; it keeps its group file and container alive.
  std::unique_ptr<DeviceFile> Open(const Uuid& uuid) {
    auto group = registry_.FindGroupOf(uuid).value();
    auto file = group->Open().value();
    auto container = registry_.CreateContainer();
    EXPECT_TRUE(file->SetContainer(container).has_value());
    EXPECT_TRUE(container->SetIommu(VFIO_TYPE1v2_IOMMU).has_value());
    last_container_ = container;
    return file->GetDeviceFd(uuid.ToString()).value();
  }

  // The backend of the device Open() opened last.
  FakeIommu& last_iommu() { return static_cast<FakeIommu&>(*last_container_->iommu()); }

  TestDevice& vendor(const Uuid& uuid) { return *parent_->device(uuid); }
  FakeMigration& fake(const Uuid& uuid) { return vendor(uuid).fake_migration(); }
  Registry& registry() { return registry_; }
  TestParentDriver& parent() { return *parent_; }

 private:
  Registry registry_{RegistryOptions{.removal_bound = std::chrono::milliseconds(20),
                                     .request_interval = std::chrono::milliseconds(5)}};
  std::shared_ptr<FakeIommuDriver> iommu_driver_ = std::make_shared<FakeIommuDriver>();
  std::shared_ptr<TestParentDriver> parent_;
  std::shared_ptr<Container> last_container_;
};

}  // namespace umdev::testing
