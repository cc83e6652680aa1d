// GpuRuntime::Open's refusals against a scripted transport: a device that is
// not a umdev gpu, a major version the runtime does not know, a ring the
// device refuses, and a transport that fails.
#include <sys/mman.h>

#include <gtest/gtest.h>

#include <map>

#include "umdev/common/mapping.h"
#include "umdev/common/unique_fd.h"
#include "umdev/gpu_guest/gpu_runtime.h"
#include "umdev/vendor/gpu/gpu_regs.h"

namespace umdev::gpu_guest {
namespace {

namespace regs = umdev::vendor::gpu::regs;

using Registers = std::map<uint32_t, uint32_t>;

// Registers from a map the test keeps (writes stored), DMA memory from
// memfds.
class ScriptedTransport final : public Transport {
 public:
  std::shared_ptr<Registers> registers = std::make_shared<Registers>(Registers{
      {regs::kRegId, regs::kIdValue}, {regs::kRegVersion, regs::kVersionValue},
      {regs::kRegCaps, regs::kCapBuiltinOnly}, {regs::kRegComputeShare, 500},
      {regs::kRegMemSize, 1u << 20}});
  int fail_reset_with = 0;

  Result<uint32_t> ReadRegister(uint32_t offset) override { return (*registers)[offset]; }
  Result<void> WriteRegister(uint32_t offset, uint32_t value) override {
    (*registers)[offset] = value;
    return {};
  }
  std::span<std::byte> slice_mapping() override { return {}; }
  Result<void> ReadSlice(uint64_t, std::span<std::byte>) override { return {}; }
  Result<void> WriteSlice(uint64_t, std::span<const std::byte>) override { return {}; }
  std::span<std::byte> doorbell_mapping() override { return {}; }
  Result<DmaBuffer> AllocateDma(size_t bytes) override {
    UniqueFd fd(::memfd_create("scripted-dma", MFD_CLOEXEC));
    if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) return FailErrno("ftruncate");
    UMDEV_ASSIGN_OR_RETURN(Mapping mapping,
                           Mapping::Map(fd.get(), 0, bytes, PROT_READ | PROT_WRITE, MAP_SHARED));
    const DmaBuffer buffer{mapping.bytes(), 0x100000 * (mappings_.size() + 1)};
    mappings_.push_back(std::move(mapping));
    return buffer;
  }
  Result<int> VectorFd(uint32_t) override { return -1; }
  Result<void> Reset() override {
    if (fail_reset_with != 0) return Fail(fail_reset_with, "scripted reset failure");
    return {};
  }
  std::string Describe() const override { return "scripted"; }

 private:
  std::vector<Mapping> mappings_;
};

int OpenErrno(std::unique_ptr<ScriptedTransport> transport) {
  auto runtime = GpuRuntime::Open(std::move(transport));
  return runtime.has_value() ? 0 : runtime.error().code;
}

TEST(GpuRuntimeOpenTest, ADeviceThatIsNotAUmdevGpuIsEnodev) {
  auto transport = std::make_unique<ScriptedTransport>();
  (*transport->registers)[regs::kRegId] = 0x12345678;
  EXPECT_EQ(OpenErrno(std::move(transport)), ENODEV);
}

TEST(GpuRuntimeOpenTest, AnUnknownMajorVersionIsEproto) {
  auto transport = std::make_unique<ScriptedTransport>();
  (*transport->registers)[regs::kRegVersion] = 2u << 16;
  EXPECT_EQ(OpenErrno(std::move(transport)), EPROTO);
}

TEST(GpuRuntimeOpenTest, ARingTheDeviceRefusesIsItsErrno) {
  auto transport = std::make_unique<ScriptedTransport>();
  (*transport->registers)[regs::kRegErrorCode] = EINVAL;
  EXPECT_EQ(OpenErrno(std::move(transport)), EINVAL);
}

TEST(GpuRuntimeOpenTest, ATransportFailureIsReturned) {
  auto transport = std::make_unique<ScriptedTransport>();
  transport->fail_reset_with = ENODEV;
  EXPECT_EQ(OpenErrno(std::move(transport)), ENODEV);
}

// What Open programmed: the ring at the DMA buffer's IOVA, 64 entries,
// enabled with a trapped tail (no doorbell mapping), and the slice's size.
TEST(GpuRuntimeOpenTest, AGoodDeviceGetsItsRingProgrammed) {
  auto transport = std::make_unique<ScriptedTransport>();
  const std::shared_ptr<Registers> registers = transport->registers;
  auto runtime = GpuRuntime::Open(std::move(transport));
  ASSERT_TRUE(runtime.has_value()) << runtime.error().Describe();
  EXPECT_EQ((*runtime)->info().memory, 1u << 20);
  EXPECT_EQ((*runtime)->info().compute_share_permille, 500u);
  EXPECT_FALSE((*runtime)->info().runs_any_spirv());
  EXPECT_EQ((*registers)[regs::kRegQueueBase], 0x100000u);
  EXPECT_EQ((*registers)[regs::kRegQueueSize], 64u);
  EXPECT_EQ((*registers)[regs::kRegQueueCtrl], regs::kQueueEnable);
  runtime->reset();
  EXPECT_EQ((*registers)[regs::kRegQueueCtrl], 0u) << "closing disables the queue";
}

}  // namespace
}  // namespace umdev::gpu_guest
