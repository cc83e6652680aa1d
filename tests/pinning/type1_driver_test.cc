// Type1Driver: the type it supports, backend creation and registration with the core.
#include "umdev/pinning/type1_driver.h"

#include <linux/vfio.h>

#include <gtest/gtest.h>

#include "type1_test_util.h"
#include "umdev/mdev_core/iommu_drivers.h"

namespace umdev::pinning::testing {
namespace {

class Type1DriverTest : public ::testing::Test {
 protected:
  std::shared_ptr<LockedMemoryAccount> account_ =
      std::make_shared<LockedMemoryAccount>(16 * kPageSize);
  std::shared_ptr<Type1Driver> driver_ =
      std::make_shared<Type1Driver>(account_, Type1Limits{.max_mappings = 7});
};

TEST_F(Type1DriverTest, IsNamedType1AndSupportsOnlyType1v2) {
  EXPECT_EQ(driver_->name(), "type1");
  EXPECT_TRUE(driver_->Supports(VFIO_TYPE1v2_IOMMU));
  EXPECT_FALSE(driver_->Supports(VFIO_TYPE1_IOMMU));
  EXPECT_FALSE(driver_->Supports(VFIO_NOIOMMU_IOMMU));
}

TEST_F(Type1DriverTest, CreateOfUnsupportedTypeIsEinval) {
  auto backend = driver_->Create(VFIO_TYPE1_IOMMU);

  ASSERT_FALSE(backend.has_value());
  EXPECT_EQ(backend.error().code, EINVAL);
}

TEST_F(Type1DriverTest, CreatedBackendUsesTheDriversLimits) {
  auto backend = driver_->Create(VFIO_TYPE1v2_IOMMU);

  ASSERT_TRUE(backend.has_value());
  EXPECT_EQ((*backend)->info().max_mappings, 7u);
}

TEST_F(Type1DriverTest, CreatedBackendsChargeTheDriversAccount) {
  GuestMemory memory(1);
  auto backend = driver_->Create(VFIO_TYPE1v2_IOMMU);
  ASSERT_TRUE(backend.has_value());
  RecordingListener listener(**backend);
  ASSERT_TRUE((*backend)->AttachListener(listener).has_value());
  ASSERT_TRUE((*backend)->Map(memory.Request(kIova, kPageSize)).has_value());

  ASSERT_TRUE(listener.PinAndHold(kIova, 1).has_value());

  EXPECT_EQ(account_->used(), kPageSize);
  backend->reset();
  EXPECT_EQ(account_->used(), 0u);
}

TEST_F(Type1DriverTest, CoreCreatesType1BackendsThroughIommuDrivers) {
  IommuDrivers drivers;
  ASSERT_TRUE(drivers.Register(driver_).has_value());

  auto backend = drivers.Create(VFIO_TYPE1v2_IOMMU);

  EXPECT_TRUE(drivers.CheckExtension(VFIO_TYPE1v2_IOMMU));
  ASSERT_TRUE(backend.has_value());
  EXPECT_NE(dynamic_cast<Type1Backend*>(backend->get()), nullptr);
}

}  // namespace
}  // namespace umdev::pinning::testing
