// Test helpers for the pinning module: memfd-backed guest memory, listeners and a fake channel.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <ostream>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "umdev/common/unique_fd.h"
#include "umdev/mdev_core/dma.h"
#include "umdev/pinning/locked_memory_account.h"
#include "umdev/pinning/type1_backend.h"

namespace umdev::pinning::testing {

inline constexpr uint64_t kIova = 0x100000;  // Arbitrary, page aligned, not 0.
inline constexpr uint32_t kProtRw = kProtRead | kProtWrite;
inline constexpr uint64_t kTwoPages = 2 * kPageSize;
inline constexpr uint64_t kFourPages = 4 * kPageSize;
// How long a test waits for something that must not hang before it fails:
// long enough that a wrongly blocking call is not mistaken for a slow one.
inline constexpr auto kHangTimeout = std::chrono::seconds(5);

// Guest RAM: a memfd of |pages| pages that every test mapping is carved from.
class GuestMemory {
 public:
  explicit GuestMemory(uint64_t pages) : fd_(::memfd_create("type1_test", MFD_CLOEXEC)) {
    EXPECT_TRUE(fd_.valid());
    EXPECT_EQ(::ftruncate(fd_.get(), static_cast<off_t>(pages * kPageSize)), 0);
  }
  // A DMA_MAP of [iova, iova + size) backed by this memory from |offset|.
  DmaMapRequest Request(uint64_t iova, uint64_t size, uint32_t prot = kProtRw,
                        uint64_t offset = 0) const {
    return DmaMapRequest{.iova = iova, .size = size, .prot = prot,
                         .fd = UniqueFd(::dup(fd_.get())), .offset = offset};
  }
  std::byte ReadByte(uint64_t offset) const {
    std::byte value{};
    EXPECT_EQ(::pread(fd_.get(), &value, 1, static_cast<off_t>(offset)), 1);
    return value;
  }
  void WriteByte(uint64_t offset, std::byte value) const {
    EXPECT_EQ(::pwrite(fd_.get(), &value, 1, static_cast<off_t>(offset)), 1);
  }

 private:
  UniqueFd fd_;
};

// A DMA_MAP with no fd: reached through the message channel only.
inline DmaMapRequest FdlessRequest(uint64_t iova, uint64_t size, uint32_t prot = kProtRw) {
  return DmaMapRequest{.iova = iova, .size = size, .prot = prot, .fd = UniqueFd(), .offset = 0};
}

// A device that pins: remembers its pins and, unless told to refuse, unpins
// those in the range it is told about, re-entering the backend from the callback.
class RecordingListener : public DmaUnmapListener {
 public:
  struct Pin {
    uint64_t iova;
    int npage;
  };
  struct Call {
    uint64_t iova;
    uint64_t size;
    bool operator==(const Call&) const = default;
  };

  explicit RecordingListener(IommuBackend& backend) : backend_(&backend) {}
  void set_backend(IommuBackend& backend) { backend_ = &backend; }

  Result<std::vector<void*>> PinAndHold(uint64_t iova, int npage, uint32_t prot = kProtRw) {
    auto pinned = backend_->PinPages(*this, iova, npage, prot);
    if (pinned.has_value()) {
      std::lock_guard lock(mu_);
      pins_.push_back({iova, npage});
    }
    return pinned;
  }
  // Unpins everything it holds (the device letting go on its own).
  void UnpinAll() {
    std::vector<Pin> release;
    {
      std::lock_guard lock(mu_);
      release.swap(pins_);
    }
    for (const Pin& pin : release) backend_->UnpinPages(*this, pin.iova, pin.npage);
  }
  void set_refuse(bool refuse) {
    std::lock_guard lock(mu_);
    refuse_ = refuse;
  }
  void OnDmaUnmap(uint64_t iova, uint64_t size) override {
    std::vector<Pin> release;
    {
      std::lock_guard lock(mu_);
      unmap_calls_.push_back({iova, size});
      if (refuse_) return;
      std::erase_if(pins_, [&](const Pin& pin) {
        const bool inside = pin.iova >= iova && pin.iova - iova < size;
        if (inside) release.push_back(pin);
        return inside;
      });
    }
    for (const Pin& pin : release) backend_->UnpinPages(*this, pin.iova, pin.npage);
  }
  void OnPinsRevoked(uint64_t iova, uint64_t size) override {
    std::lock_guard lock(mu_);
    revoked_calls_.push_back({iova, size});
    std::erase_if(pins_, [&](const Pin& pin) { return pin.iova >= iova && pin.iova - iova < size; });
  }
  std::vector<Call> unmap_calls() const {
    std::lock_guard lock(mu_);
    return unmap_calls_;
  }
  std::vector<Call> revoked_calls() const {
    std::lock_guard lock(mu_);
    return revoked_calls_;
  }

 private:
  IommuBackend* backend_;  // Not owned.
  mutable std::mutex mu_;
  bool refuse_ = false;
  std::vector<Pin> pins_;
  std::vector<Call> unmap_calls_;
  std::vector<Call> revoked_calls_;
};

// Client-side memory for fd-less mappings: |size| bytes seen at IOVA |base|.
class FakeChannel : public DmaMessageChannel {
 public:
  FakeChannel(uint64_t base, uint64_t size) : base_(base), memory_(size) {}

  Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) override {
    std::lock_guard lock(mu_);
    reads_.push_back({iova, out.size()});
    if (fail_with_ != 0) return Fail(fail_with_, "fake channel read");
    std::copy_n(memory_.begin() + static_cast<ptrdiff_t>(iova - base_), out.size(), out.begin());
    return {};
  }
  Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) override {
    std::lock_guard lock(mu_);
    writes_.push_back({iova, data.size()});
    if (fail_with_ != 0) return Fail(fail_with_, "fake channel write");
    std::copy(data.begin(), data.end(), memory_.begin() + static_cast<ptrdiff_t>(iova - base_));
    return {};
  }

  using Access = std::pair<uint64_t, uint64_t>;  // iova, length
  std::vector<Access> reads() const {
    std::lock_guard lock(mu_);
    return reads_;
  }
  std::vector<Access> writes() const {
    std::lock_guard lock(mu_);
    return writes_;
  }
  std::byte at(uint64_t iova) const {
    std::lock_guard lock(mu_);
    return memory_[iova - base_];
  }
  void set_fail_with(int code) {
    std::lock_guard lock(mu_);
    fail_with_ = code;
  }

 private:
  const uint64_t base_;
  mutable std::mutex mu_;
  std::vector<std::byte> memory_;
  std::vector<Access> reads_;
  std::vector<Access> writes_;
  int fail_with_ = 0;
};

// A backend on a daemon account with room to spare and one attached
// listener; every test ends by checking that the backend's teardown (which
// still has the listener attached) returned every locked byte.
class Type1Test : public ::testing::Test {
 protected:
  static constexpr uint64_t kAccountLimit = 64 * kPageSize;
  static constexpr uint64_t kMemoryPages = 16;

  void SetUp() override { ASSERT_TRUE(backend_->AttachListener(listener_).has_value()); }
  void TearDown() override {
    backend_.reset();
    EXPECT_EQ(account_->used(), 0u) << "locked memory leaked past teardown";
    if (!expect_revocations_) {
      EXPECT_TRUE(listener_.revoked_calls().empty()) << "a test left pins its listener forgot";
    }
  }
  Type1Backend& backend() { return *backend_; }
  // A fresh backend with |limits| and the listener attached to it.
  void Recreate(Type1Limits limits) {
    backend_ = std::make_unique<Type1Backend>(account_, limits);
    listener_.set_backend(*backend_);
    ASSERT_TRUE(backend_->AttachListener(listener_).has_value());
  }

  bool expect_revocations_ = false;
  std::shared_ptr<LockedMemoryAccount> account_ =
      std::make_shared<LockedMemoryAccount>(kAccountLimit);
  std::unique_ptr<Type1Backend> backend_ = std::make_unique<Type1Backend>(account_);
  RecordingListener listener_{*backend_};  // Outlives backend_: TearDown resets it first.
  GuestMemory memory_{kMemoryPages};
};

// Prints a parameterised case as its |name|, keeping CTest names readable
// and stable (the default is a byte dump that includes a pointer).
#define UMDEV_PRINT_CASE_AS_NAME(Type) \
  inline void PrintTo(const Type& c, std::ostream* os) { *os << c.name; }

// Names a parameterised test after its case's |name| field.
struct CaseName {
  template <typename P>
  std::string operator()(const ::testing::TestParamInfo<P>& param_info) const {
    return param_info.param.name;
  }
};

inline std::vector<std::byte> Bytes(size_t count, uint8_t value) {
  return std::vector<std::byte>(count, std::byte{value});
}

}  // namespace umdev::pinning::testing
