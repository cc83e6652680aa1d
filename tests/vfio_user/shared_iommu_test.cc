// SharedAddressSpace and its views: the sessions of one group's devices
// share one backend; the same mapping from several exists once, and a
// session's end takes only what it mapped.
#include "shared_iommu.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fakes/fake_iommu.h"

namespace umdev::vfio_user {
namespace {

class SharedAddressSpaceTest : public ::testing::Test {
 protected:
  DmaMapRequest Request(uint64_t iova, uint64_t size, uint64_t offset = 0) {
    DmaMapRequest request;
    request.fd = UniqueFd(::dup(ram_.get()));
    request.iova = iova;
    request.size = size;
    request.offset = offset;
    request.prot = kProtRead | kProtWrite;
    return request;
  }

  std::shared_ptr<std::atomic<int>> live_ = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<umdev::testing::FakeIommu> backend_ =
      std::make_shared<umdev::testing::FakeIommu>(live_);
  std::shared_ptr<SharedAddressSpace> space_ = std::make_shared<SharedAddressSpace>(backend_);
  UniqueFd ram_ = [] {
    UniqueFd fd(::memfd_create("guest", MFD_CLOEXEC));
    EXPECT_EQ(::ftruncate(fd.get(), 1 << 20), 0);
    return fd;
  }();
};

TEST_F(SharedAddressSpaceTest, TheSameMappingFromTwoSessionsExistsOnceUntilBothLetGo) {
  auto first = std::make_unique<SharedAddressSpaceView>(space_);
  auto second = std::make_unique<SharedAddressSpaceView>(space_);
  ASSERT_TRUE(first->Map(Request(0x100000, 0x10000)).has_value());
  ASSERT_TRUE(second->Map(Request(0x100000, 0x10000)).has_value()) << "QEMU maps RAM per device";
  EXPECT_EQ(backend_->mapping_count(), 1u);
  EXPECT_EQ(first->mapping_count(), 1u);
  // Another mapping at the same place is the backend's EEXIST.
  EXPECT_EQ(second->Map(Request(0x100000, 0x10000, 0x10000)).error().code, EEXIST);
  ASSERT_TRUE(second->Map(Request(0x200000, 0x1000)).has_value());
  EXPECT_EQ(backend_->mapping_count(), 2u);

  first.reset();  // The first session ends: what the second uses stays.
  EXPECT_EQ(backend_->mapping_count(), 2u);
  EXPECT_EQ(second->Unmap(0x100000, 0x10000).value(), 0x10000u);
  EXPECT_EQ(backend_->mapping_count(), 1u);
  EXPECT_EQ(second->UnmapAll().value(), 0x1000u);
  EXPECT_EQ(backend_->mapping_count(), 0u);
}

TEST_F(SharedAddressSpaceTest, AViewUnmapsOnlyWholeMappingsOfItsOwn) {
  auto first = std::make_unique<SharedAddressSpaceView>(space_);
  auto second = std::make_unique<SharedAddressSpaceView>(space_);
  ASSERT_TRUE(first->Map(Request(0x100000, 0x2000)).has_value());
  EXPECT_EQ(first->Unmap(0x100000, 0x1000).error().code, EINVAL) << "would split it";
  EXPECT_EQ(second->Unmap(0x100000, 0x2000).value(), 0u) << "not the second's to unmap";
  EXPECT_EQ(backend_->mapping_count(), 1u);
  EXPECT_EQ(first->Unmap(0, 0).error().code, EINVAL);
  DmaMapRequest no_fd = Request(0x300000, 0x1000);
  no_fd.fd.Reset();
  EXPECT_EQ(first->Map(std::move(no_fd)).error().code, EINVAL);
  EXPECT_EQ(first->Unmap(0x0, 0x200000).value(), 0x2000u);
  EXPECT_EQ(backend_->mapping_count(), 0u);
}

}  // namespace
}  // namespace umdev::vfio_user
