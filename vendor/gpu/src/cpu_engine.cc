// CpuEngine: slices in memfd-backed host memory, commands run on TBB. For hosts
// without a Vulkan device; DISPATCH runs only the built-in kernels.

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/info.h>
#include <tbb/parallel_for.h>
#include <tbb/parallel_reduce.h>

#include "shared_memory.h"
#include "slice_bounds.h"
#include "umdev/common/guest_memory.h"
#include "umdev/common/mutex.h"
#include "umdev/vendor/gpu/builtin_kernels.h"
#include "umdev/vendor/gpu/engine.h"

namespace umdev::vendor::gpu {
namespace {

// Bytes one TBB task moves: large enough that task overhead does not matter.
constexpr uint64_t kChunkBytes = uint64_t{1} << 20;

// The capacity account, shared by the engine and every slice so a slice may
// outlive the Engine object. Thread-safe.
class MemoryAccount {
 public:
  explicit MemoryAccount(uint64_t capacity) : capacity_(capacity) {}
  uint64_t capacity() const { return capacity_; }
  uint64_t allocated() {
    MutexLock lock(mu_);
    return allocated_;
  }
  Result<void> Take(uint64_t size) {
    MutexLock lock(mu_);
    if (size > capacity_ - allocated_) {
      return Fail(ENOSPC, fmt::format("slice of {:#x} bytes: only {:#x} of {:#x} left", size,
                                      capacity_ - allocated_, capacity_));
    }
    allocated_ += size;
    return {};
  }
  void Give(uint64_t size) {
    MutexLock lock(mu_);
    allocated_ -= size;
  }

 private:
  const uint64_t capacity_;
  Mutex mu_;
  uint64_t allocated_ UMDEV_GUARDED_BY(mu_) = 0;
};

// tbb::parallel_for over [0, n) in tasks of at least |grain| items. Under
// ThreadSanitizer the tasks run one after another on the calling thread:
// libtbb is not instrumented, so TSan cannot see the synchronisation that
// orders a task's writes before parallel_for returns and reports races in
// TBB's own stack frames. The tasks are independent, so running them in
// order computes the same result.
template <typename Body>
void ForChunks(uint64_t n, uint64_t grain, const Body& body) {
#if defined(__SANITIZE_THREAD__)
  for (uint64_t begin = 0; begin < n; begin += grain) {
    body(tbb::blocked_range<uint64_t>(begin, std::min(n, begin + grain), grain));
  }
#else
  tbb::parallel_for(tbb::blocked_range<uint64_t>(0, n, grain), body);
#endif
}

const BufferBinding* FindBinding(const DispatchCommand& command, uint32_t binding) {
  for (const BufferBinding& b : command.bindings) {
    if (b.binding == binding) return &b;
  }
  return nullptr;
}

// Thread-compatible (see Slice).
class CpuSlice final : public Slice {
 public:
  CpuSlice(std::shared_ptr<MemoryAccount> account, SharedMemory memory)
      : account_(std::move(account)), shared_(std::move(memory)) {}
  ~CpuSlice() override { account_->Give(size()); }

  uint64_t size() const override { return memory_.size(); }
  int memory_fd() const override { return shared_.fd.get(); }

  Result<void> Write(uint64_t offset, std::span<const std::byte> data) override {
    UMDEV_TRY(CheckRange(size(), offset, data.size(), "write"));
    // |data| may be pinned guest memory, which the client can truncate.
    return CopyGuestMemory(memory_.data() + offset, data.data(), data.size());
  }

  Result<void> Read(uint64_t offset, std::span<std::byte> out) override {
    UMDEV_TRY(CheckRange(size(), offset, out.size(), "read"));
    return CopyGuestMemory(out.data(), memory_.data() + offset, out.size());
  }

  Result<void> Copy(uint64_t dst, uint64_t src, uint64_t bytes) override {
    UMDEV_TRY(CheckCopy(size(), dst, src, bytes));
    std::byte* base = memory_.data();
    ForChunks(bytes, kChunkBytes, [&](const tbb::blocked_range<uint64_t>& r) {
      std::memcpy(base + dst + r.begin(), base + src + r.begin(), r.size());
    });
    return {};
  }

  Result<void> Fill(uint64_t offset, uint64_t bytes, uint32_t pattern) override {
    UMDEV_TRY(CheckFill(size(), offset, bytes));
    uint32_t* words = Words(offset);
    ForChunks(bytes / kWordBytes, kChunkBytes / 4, [&](const tbb::blocked_range<uint64_t>& r) {
      std::fill(words + r.begin(), words + r.end(), pattern);
    });
    return {};
  }

  Result<void> Dispatch(const DispatchCommand& command) override {
    UMDEV_TRY(CheckDispatch(size(), command));
    const BuiltinKernel* kernel = FindBuiltinKernel(command.entry_point);
    if (kernel == nullptr) {
      return Fail(ENOTSUP, fmt::format("the CPU engine has no kernel '{}' (it runs only the "
                                       "built-in kernels, not SPIR-V)",
                                       command.entry_point));
    }
    if (command.push_constants.size() < kernel->push_constant_bytes) {
      return Fail(EINVAL, fmt::format("{} needs {} bytes of push constants", kernel->name,
                                      kernel->push_constant_bytes));
    }
    uint32_t count = 0;
    std::memcpy(&count, command.push_constants.data(), sizeof(count));
    // The invocations the same dispatch would run on a GPU: global ids in x
    // below groups_x * local_size_x, each of them once per (y, z) group.
    const uint64_t n = std::min<uint64_t>(
        count, uint64_t{command.groups_x} * kernel->local_size_x);
    const uint64_t repeats = uint64_t{command.groups_y} * command.groups_z;
    if (kernel->name == "umdev_vadd_u32") return VectorAdd(command, n);
    return ReduceSum(command, n, repeats);
  }

 private:
  uint32_t* Words(uint64_t offset) {
    return reinterpret_cast<uint32_t*>(memory_.data() + offset);
  }

  // Binding |index| of |command|, which must hold |elements| words. The CPU
  // engine checks this strictly where a GPU would read zeros or drop writes.
  Result<uint32_t*> Buffer(const DispatchCommand& command, uint32_t index, uint64_t elements) {
    const BufferBinding* b = FindBinding(command, index);
    if (b == nullptr) {
      return Fail(EINVAL, fmt::format("{} needs binding {}", command.entry_point, index));
    }
    if (b->size / kWordBytes < elements) {
      return Fail(EFAULT, fmt::format("{} binding {} holds {} words, needs {}",
                                      command.entry_point, index, b->size / kWordBytes,
                                      elements));
    }
    return Words(b->offset);
  }

  Result<void> VectorAdd(const DispatchCommand& command, uint64_t n) {
    UMDEV_ASSIGN_OR_RETURN(const uint32_t* a, Buffer(command, 0, n));
    UMDEV_ASSIGN_OR_RETURN(const uint32_t* b, Buffer(command, 1, n));
    UMDEV_ASSIGN_OR_RETURN(uint32_t* c, Buffer(command, 2, n));
    ForChunks(n, kChunkBytes / 4, [&](const tbb::blocked_range<uint64_t>& r) {
      for (uint64_t i = r.begin(); i != r.end(); ++i) c[i] = a[i] + b[i];
    });
    return {};
  }

  Result<void> ReduceSum(const DispatchCommand& command, uint64_t n, uint64_t repeats) {
    UMDEV_ASSIGN_OR_RETURN(const uint32_t* values, Buffer(command, 0, n));
    UMDEV_ASSIGN_OR_RETURN(uint32_t* sum, Buffer(command, 1, 1));
    const auto add_range = [values](const tbb::blocked_range<uint64_t>& r, uint32_t acc) {
      for (uint64_t i = r.begin(); i != r.end(); ++i) acc += values[i];
      return acc;
    };
#if defined(__SANITIZE_THREAD__)  // As in ForChunks: TSan cannot see into TBB.
    const uint32_t partial = add_range(tbb::blocked_range<uint64_t>(0, n), 0);
#else
    const uint32_t partial = tbb::parallel_reduce(
        tbb::blocked_range<uint64_t>(0, n, kChunkBytes / 4), uint32_t{0}, add_range,
        [](uint32_t x, uint32_t y) -> uint32_t { return x + y; });
#endif
    *sum += static_cast<uint32_t>(partial * repeats);
    return {};
  }

  std::shared_ptr<MemoryAccount> account_;
  SharedMemory shared_;
  const Mapping& memory_ = shared_.mapping;
};

// Thread-safe.
class CpuEngine final : public Engine {
 public:
  explicit CpuEngine(uint64_t capacity)
      : account_(std::make_shared<MemoryAccount>(capacity)) {}

  EngineKind kind() const override { return EngineKind::kCpu; }
  std::string name() const override {
    return fmt::format("cpu (tbb, {} threads)", tbb::info::default_concurrency());
  }
  uint64_t memory_capacity() const override { return account_->capacity(); }
  uint64_t memory_allocated() const override { return account_->allocated(); }

  Result<std::unique_ptr<Slice>> CreateSlice(uint64_t size) override {
    if (size == 0 || size % kWordBytes != 0) {
      return Fail(EINVAL, fmt::format("slice size {:#x} (a non-zero multiple of 4)", size));
    }
    UMDEV_TRY(account_->Take(size));
    // A memfd is zero-filled and its pages are allocated only when touched.
    auto memory = CreateSharedMemory("umdev-gpu-slice", size);
    if (!memory) {
      account_->Give(size);
      return std::unexpected(Wrap(std::move(memory).error(), "cpu slice"));
    }
    return std::make_unique<CpuSlice>(account_, std::move(*memory));
  }

 private:
  std::shared_ptr<MemoryAccount> account_;
};

}  // namespace

Result<std::shared_ptr<Engine>> CreateCpuEngine(const CpuEngineOptions& options) {
  if (options.memory_limit == 0) return Fail(EINVAL, "cpu engine with no memory");
  return std::make_shared<CpuEngine>(options.memory_limit);
}

}  // namespace umdev::vendor::gpu
