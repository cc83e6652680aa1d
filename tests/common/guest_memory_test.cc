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
// Where CopyGuestMemory uses its own routine (guest_memory.cc).
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
constexpr bool kSmallCopiesInOrder = true;
#else
constexpr bool kSmallCopiesInOrder = false;
#endif

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

// Every size class of the copy (quadwords, trailing bytes, memcpy from 256
// bytes) copies exactly its bytes, at any alignment, and touches nothing
// around.
TEST(GuestMemoryTest, EverySizeAndAlignmentCopiesExactly) {
  std::vector<std::byte> from(600), to(620);
  for (size_t i = 0; i < from.size(); ++i) from[i] = static_cast<std::byte>(i * 7 + 1);
  for (size_t size : {1, 3, 7, 8, 9, 15, 16, 31, 63, 64, 65, 200, 255, 256, 257, 500}) {
    for (size_t skew : {0, 1, 5}) {
      std::fill(to.begin(), to.end(), std::byte{0xee});
      ASSERT_TRUE(CopyGuestMemory(to.data() + 8 + skew, from.data() + skew, size));
      for (size_t i = 0; i < to.size(); ++i) {
        const bool inside = i >= 8 + skew && i < 8 + skew + size;
        ASSERT_EQ(to[i], inside ? from[i - 8] : std::byte{0xee}) << size << "/" << skew << "@" << i;
      }
    }
  }
}

// A fault at each kind of access (a quadword or a byte, loaded or stored,
// and inside memcpy) is EFAULT, and what lies before the unbacked page has
// been copied.
TEST(GuestMemoryTest, AFaultAtEveryAccessKindIsEfault) {
  TruncatedMapping guest(4, 1);
  std::vector<std::byte> host(512, std::byte{0x11});
  for (size_t before : {0, 3, 8}) {
    for (size_t size : {5, 8, 13, 24, 100, 300}) {
      if (size <= before) continue;  // All of it backed.
      std::byte* at = guest.base + kPage - before;
      std::vector<std::byte> out(size, std::byte{0});
      auto read = CopyGuestMemory(out.data(), at, size);
      ASSERT_FALSE(read.has_value()) << before << "/" << size;
      EXPECT_EQ(read.error().code, EFAULT);
      // The small copies of the listed-instruction routine go in order, so
      // what precedes the fault is done (memcpy, from 256 bytes and in the
      // sanitizer builds, promises no order: "part of it may have been
      // done").
      const size_t done = kSmallCopiesInOrder && size < 256 ? std::min(before, size) / 8 * 8 : 0;
      for (size_t i = 0; i < done; ++i) {
        EXPECT_EQ(out[i], at[i]) << before << "/" << size << "@" << i;
      }
      auto written = CopyGuestMemory(at, host.data(), size);
      ASSERT_FALSE(written.has_value()) << before << "/" << size;
      EXPECT_EQ(written.error().code, EFAULT);
    }
  }
  // The guarded copy still works on this thread afterwards.
  std::byte word[8];
  EXPECT_TRUE(CopyGuestMemory(word, guest.base, sizeof(word)));
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
