#include "umdev/common/mapping.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "umdev/common/unique_fd.h"

namespace umdev {
namespace {

TEST(MappingTest, MapsSharedMemfdAndSeesWrites) {
  UniqueFd fd(memfd_create("mapping_test", 0));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(ftruncate(fd.get(), 4096), 0);
  auto mapping = Mapping::Map(fd.get(), 0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED);
  ASSERT_TRUE(mapping.has_value());
  mapping->data()[10] = std::byte{0x5a};
  unsigned char byte = 0;
  ASSERT_EQ(pread(fd.get(), &byte, 1, 10), 1);
  EXPECT_EQ(byte, 0x5a);
}

TEST(MappingTest, MapOfBadFdReportsErrno) {
  auto mapping = Mapping::Map(-1, 0, 4096, PROT_READ, MAP_SHARED);
  ASSERT_FALSE(mapping.has_value());
  EXPECT_EQ(mapping.error().code, EBADF);
}

TEST(MappingTest, MoveTransfersOwnership) {
  auto mapping = Mapping::Map(-1, 0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
  ASSERT_TRUE(mapping.has_value());
  Mapping moved = std::move(*mapping);
  EXPECT_FALSE(mapping->valid());
  EXPECT_TRUE(moved.valid());
  EXPECT_EQ(moved.size(), 4096u);
}

TEST(UniqueFdTest, ResetClosesDescriptor) {
  UniqueFd fd(memfd_create("fd_test", 0));
  const int raw = fd.get();
  fd.Reset();
  EXPECT_FALSE(fd.valid());
  EXPECT_EQ(fcntl(raw, F_GETFD), -1);
}

}  // namespace
}  // namespace umdev
