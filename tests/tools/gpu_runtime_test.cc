// The gpu runtime and umdev-gpu over the host transport (vfio-user) against
// a real umdevd, on the CPU engine and on Vulkan (llvmpipe) where there is
// one: device information, slice memory, uploads and downloads both ways,
// the self test in both wait modes, the device's errors with their meaning,
// and the CLI's commands.
#include "cli_fixture.h"

#include <numeric>

#include "spirv/vadd_u32.h"
#include "vendor/gpu/gpu_test_util.h"
#include "umdev/gpu_cli/gpu_commands.h"
#include "umdev/gpu_guest/gpu_runtime.h"
#include "umdev/gpu_guest/vfio_user_transport.h"

namespace umdev::test {
namespace {

using gpu_guest::GpuRuntime;
using gpu_guest::SliceRange;
using gpu_guest::WaitMode;

constexpr const char* kU1 = "2b9cf5d4-0c8e-4a0b-9d2c-7f1e2d3c4b5a";

class GpuRuntimeTest : public CliFixture, public ::testing::WithParamInterface<const char*> {
 protected:
  std::string Binary() const override { return UMDEVD; }
  std::string Config() const override {
    return std::string(R"({"parents":[{"driver":"gpu","name":"gpu0","memory":"64M",)") +
           GetParam() + "}]}";
  }
  void SetUp() override {
    if (vulkan() && vendor::gpu::testing::PickTestDevice() < 0) {
      GTEST_SKIP() << vendor::gpu::testing::kNoVulkanMessage;
    }
    CliFixture::SetUp();
    if (HasFatalFailure()) return;
    const Output started = Ctl("start -p gpu0 -t gpu-1of4 -u " + std::string(kU1));
    ASSERT_EQ(started.status, 0) << started.out;
    socket_ = (dir_ / "state" / "vfio-user" / (std::string(kU1) + ".sock")).string();
  }
  bool vulkan() const { return std::string(GetParam()).find("cpu") == std::string::npos; }
  std::unique_ptr<GpuRuntime> Open() {
    auto transport = gpu_guest::VfioUserTransport::Connect(socket_);
    EXPECT_TRUE(transport.has_value()) << transport.error().Describe();
    if (!transport.has_value()) return nullptr;
    auto runtime = GpuRuntime::Open(std::move(*transport));
    EXPECT_TRUE(runtime.has_value()) << runtime.error().Describe();
    return runtime.has_value() ? std::move(*runtime) : nullptr;
  }
  Output Gpu(const std::string& args) const {
    return Run(std::string(UMDEV_GPU) + " --socket " + socket_ + " " + args);
  }

  std::string socket_;
};

TEST_P(GpuRuntimeTest, OpensTheSliceAndReportsIt) {
  auto gpu = Open();
  ASSERT_NE(gpu, nullptr);
  EXPECT_EQ(gpu->info().memory, 16u << 20);
  EXPECT_EQ(gpu->info().compute_share_permille, 250u);
  EXPECT_EQ(gpu->info().runs_any_spirv(), vulkan());
  EXPECT_TRUE(gpu->info().doorbell_page());
  EXPECT_EQ(gpu->info().slice_mappable(), !gpu->transport().slice_mapping().empty());
  auto counters = gpu->Counters();
  ASSERT_TRUE(counters.has_value());
}

TEST_P(GpuRuntimeTest, SliceMemoryIsAllocatedFirstFitAndFreedWhole) {
  auto gpu = Open();
  ASSERT_NE(gpu, nullptr);
  auto a = gpu->Allocate(4096);
  auto b = gpu->Allocate(100, 4096);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(a->offset, 0u);
  EXPECT_EQ(b->offset, 4096u);
  EXPECT_EQ(gpu->Allocate(0).error().code, EINVAL);
  EXPECT_EQ(gpu->Allocate(16, 3).error().code, EINVAL);
  EXPECT_EQ(gpu->Allocate(16u << 20).error().code, ENOMEM);
  gpu->Free(*a);
  gpu->Free(*b);
  auto whole = gpu->Allocate(16u << 20);
  ASSERT_TRUE(whole.has_value()) << "the frees coalesced";
  EXPECT_EQ(whole->offset, 0u);
}

// 2.5 MiB each way, so that ring COPYs go in several 1 MiB pieces, and the
// mapping and the ring see the same bytes.
TEST_P(GpuRuntimeTest, DataGoesBothWaysThroughTheMappingAndTheRing) {
  auto gpu = Open();
  ASSERT_NE(gpu, nullptr);
  const size_t bytes = (5u << 20) / 2;
  std::vector<std::byte> data(bytes);
  for (size_t i = 0; i < bytes; ++i) data[i] = static_cast<std::byte>(i * 7 + i / 4096);
  auto range = gpu->Allocate(bytes);
  ASSERT_TRUE(range.has_value());
  ASSERT_TRUE(gpu->UploadByCopy(*range, data).has_value());
  std::vector<std::byte> back(bytes);
  ASSERT_TRUE(gpu->Download(*range, back).has_value());
  EXPECT_EQ(back, data);
  std::reverse(data.begin(), data.end());
  ASSERT_TRUE(gpu->Upload(*range, data).has_value());
  std::fill(back.begin(), back.end(), std::byte{0});
  ASSERT_TRUE(gpu->DownloadByCopy(*range, back).has_value());
  EXPECT_EQ(back, data);
  ASSERT_TRUE(gpu->Fill(SliceRange{range->offset, 4096}, 0x01020304).has_value());
  uint32_t word = 0;
  ASSERT_TRUE(gpu->Download(*range, std::as_writable_bytes(std::span(&word, 1))).has_value());
  EXPECT_EQ(word, 0x01020304u);
  EXPECT_EQ(gpu->Upload(SliceRange{0, 4}, data).error().code, EINVAL) << "larger than the range";
}

TEST_P(GpuRuntimeTest, TheSelftestPassesByInterruptAndByPolling) {
  auto gpu = Open();
  ASSERT_NE(gpu, nullptr);
  auto by_interrupt = gpu_cli::Selftest(*gpu, 4096);
  ASSERT_TRUE(by_interrupt.has_value()) << by_interrupt.error().Describe();
  EXPECT_NE(by_interrupt->find("selftest passed"), std::string::npos);
  gpu->set_wait(WaitMode::kPolling, std::chrono::seconds(10));
  auto by_polling = gpu_cli::Selftest(*gpu, 4096);
  ASSERT_TRUE(by_polling.has_value()) << by_polling.error().Describe();
}

// The device's errors come back with their errno and meaning, and the
// queue goes on with what follows.
TEST_P(GpuRuntimeTest, DeviceErrorsAreExplainedAndTheQueueGoesOn) {
  auto gpu = Open();
  ASSERT_NE(gpu, nullptr);
  auto range = gpu->Allocate(4096);
  ASSERT_TRUE(range.has_value());
  auto outside = gpu->Fill(SliceRange{16u << 20, 4096}, 1);
  ASSERT_FALSE(outside.has_value());
  EXPECT_EQ(outside.error().code, EFAULT);
  EXPECT_NE(outside.error().Describe().find("FILL at ring entry"), std::string::npos)
      << outside.error().Describe();
  EXPECT_NE(outside.error().Describe().find("outside the slice"), std::string::npos);
  auto misaligned = gpu->Fill(SliceRange{range->offset + 2, 4}, 1);
  EXPECT_EQ(misaligned.error().code, EINVAL);
  // A module the engine refuses: garbage on Vulkan (EINVAL from the SPIR-V
  // checks), any non-built-in kernel on the CPU engine (ENOTSUP).
  const std::vector<uint32_t> garbage = {0x07230203, 0x00010000, 0, 0, 0};
  auto module = gpu->LoadModule(garbage);
  ASSERT_TRUE(module.has_value());
  gpu_guest::DispatchSpec spec;
  spec.bindings = {{0, *range}};
  auto refused = gpu->Dispatch(*module, "main", spec);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, vulkan() ? EINVAL : EOPNOTSUPP) << refused.error().Describe();
  gpu->Unload(*module);
  EXPECT_TRUE(gpu->Sync().has_value());
  auto counters = gpu->Counters();
  ASSERT_TRUE(counters.has_value());
  EXPECT_GE(counters->errors, 3u);
  auto after = gpu_cli::Selftest(*gpu, 1024);
  EXPECT_TRUE(after.has_value()) << after.error().Describe();
}

TEST_P(GpuRuntimeTest, TheCliRunsEachCommand) {
  const Output info = Gpu("info");
  ASSERT_EQ(info.status, 0) << info.out;
  EXPECT_NE(info.out.find("memory:        16.0 MiB (16777216 bytes)\n"), std::string::npos)
      << info.out;
  EXPECT_NE(info.out.find("doorbell:      polled page (BAR4)\n"), std::string::npos);
  const Output selftest = Gpu("--polling selftest --elements 1024");
  ASSERT_EQ(selftest.status, 0) << selftest.out;
  EXPECT_NE(selftest.out.find("selftest passed"), std::string::npos);
  const Output bench = Gpu("bench --ms 50");
  ASSERT_EQ(bench.status, 0) << bench.out;
  EXPECT_NE(bench.out.find("fence round trip"), std::string::npos) << bench.out;
  // run: a module that is not SPIR-V, a missing file, a bad buffer spec.
  const std::string bad = WriteFile("bad.spv", "abc");
  EXPECT_EQ(Gpu("run " + bad).status, 1);
  EXPECT_EQ(Gpu("run /nonexistent.spv").status, 1);
  const Output spec = Gpu("run " + bad + " --buffer 0:3");
  EXPECT_EQ(spec.status, 1);
  EXPECT_NE(spec.out.find("BINDING:BYTES"), std::string::npos) << spec.out;
  EXPECT_NE(Run(std::string(UMDEV_GPU) + " --socket /nonexistent.sock info").status, 0);
}

// run with the built-in vector add's SPIR-V, read back into a file.
TEST_P(GpuRuntimeTest, TheCliRunsAModuleAndWritesItsOutput) {
  std::vector<uint32_t> a(64), b(64);
  std::iota(a.begin(), a.end(), 1);
  std::iota(b.begin(), b.end(), 1000);
  const auto write = [&](const std::string& name, const std::vector<uint32_t>& values) {
    return WriteFile(name, std::string(reinterpret_cast<const char*>(values.data()),
                                       values.size() * 4));
  };
  const std::string fa = write("a.bin", a), fb = write("b.bin", b);
  const std::string module = WriteFile(
      "vadd.spv", std::string(reinterpret_cast<const char*>(umdev_spirv_vadd_u32),
                              sizeof(umdev_spirv_vadd_u32)));
  const std::string out = (dir_ / "c.bin").string();
  const Output ran = Gpu("run " + module + " --entry umdev_vadd_u32 --groups 1 --buffer 0:256:" +
                         fa + " --buffer 1:256:" + fb + " --buffer 2:256 --output 2:" + out +
                         " --push-u32 64");
  ASSERT_EQ(ran.status, 0) << ran.out;
  const std::string c = ReadFile(out);
  ASSERT_EQ(c.size(), 256u);
  for (size_t i = 0; i < 64; ++i) {
    uint32_t value;
    std::memcpy(&value, c.data() + i * 4, 4);
    EXPECT_EQ(value, a[i] + b[i]) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, GpuRuntimeTest,
                         ::testing::Values(R"("engine":"cpu")", R"("engine":"vulkan")"),
                         [](const auto& param_info) {
                           return std::string(param_info.index == 0 ? "Cpu" : "Vulkan");
                         });

}  // namespace
}  // namespace umdev::test
