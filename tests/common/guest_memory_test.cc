// CopyGuestMemory: a client truncating its memory under a copy costs that
// copy an EFAULT, not the daemon a SIGBUS.
#include "umdev/common/guest_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "umdev/common/unique_fd.h"

namespace umdev {
namespace {

constexpr size_t kPage = 4096;

// A file-backed mapping of |pages| pages whose file is then cut to |keep|.
struct TruncatedMapping {
  explicit TruncatedMapping(size_t pages, size_t keep) : size(pages * kPage) {
    fd = UniqueFd(::memfd_create("guest", MFD_CLOEXEC));
    EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
    base = static_cast<std::byte*>(
        ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0));
    EXPECT_NE(base, MAP_FAILED);
    std::fill(base, base + size, std::byte{0x5a});
    EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(keep * kPage)), 0);
  }
  ~TruncatedMapping() { ::munmap(base, size); }
  UniqueFd fd;
  size_t size;
  std::byte* base;
};

TEST(GuestMemoryTest, CopiesLikeMemcpy) {
  std::vector<std::byte> from(10000, std::byte{7}), to(10000);
  ASSERT_TRUE(CopyGuestMemory(to.data(), from.data(), from.size()));
  EXPECT_EQ(to, from);
  EXPECT_TRUE(CopyGuestMemory(nullptr, nullptr, 0));
}

TEST(GuestMemoryTest, ReadingPastTheTruncatedEndIsEfault) {
  TruncatedMapping guest(4, 1);
  std::vector<std::byte> out(2 * kPage);
  ASSERT_TRUE(CopyGuestMemory(out.data(), guest.base, kPage));  // Still backed.
  EXPECT_EQ(out[0], std::byte{0x5a});
  auto copied = CopyGuestMemory(out.data(), guest.base + kPage, out.size());
  ASSERT_FALSE(copied.has_value());
  EXPECT_EQ(copied.error().code, EFAULT);
  // The process goes on, and so does this thread's next guarded copy.
  EXPECT_TRUE(CopyGuestMemory(out.data(), guest.base, kPage));
}

TEST(GuestMemoryTest, WritingPastTheTruncatedEndIsEfault) {
  TruncatedMapping guest(2, 0);
  std::vector<std::byte> data(kPage, std::byte{1});
  auto copied = CopyGuestMemory(guest.base, data.data(), data.size());
  ASSERT_FALSE(copied.has_value());
  EXPECT_EQ(copied.error().code, EFAULT);
}

TEST(GuestMemoryTest, ManyFaultsOnManyThreads) {
  TruncatedMapping guest(8, 0);
  std::vector<std::thread> threads;
  std::atomic<int> faults{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::byte out[64];
      for (int i = 0; i < 100; ++i) {
        if (!CopyGuestMemory(out, guest.base + (i % 8) * kPage, sizeof(out)).has_value()) {
          ++faults;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(faults.load(), 400);
}

TEST(GuestMemoryTest, ProbeFindsTheFirstUnbackedPage) {
  TruncatedMapping guest(4, 2);
  EXPECT_TRUE(ProbeGuestMemory(guest.base, 2 * kPage));
  EXPECT_TRUE(ProbeGuestMemory(guest.base + 100, kPage));  // Unaligned, inside.
  auto probed = ProbeGuestMemory(guest.base + kPage, 2 * kPage);
  ASSERT_FALSE(probed.has_value());
  EXPECT_EQ(probed.error().code, EFAULT);
}

void TouchTruncatedMemoryUnguarded() {
  TruncatedMapping guest(2, 0);
  std::byte out[8];
  (void)CopyGuestMemory(out, guest.base, sizeof(out));  // Installs the handler.
  volatile std::byte touched = guest.base[0];
  (void)touched;
}

TEST(GuestMemoryDeathTest, ASigbusOutsideAGuardedCopyStillKills) {
  EXPECT_DEATH(TouchTruncatedMemoryUnguarded(), "");
}

}  // namespace
}  // namespace umdev
