// GpuParent: the "gpu" parent driver — one accelerator (a Vulkan device, or
// the host CPU) carved into MIG-style fixed fractions.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/irq/virqfd.h"
#include "umdev/mdev_core/parent_driver.h"
#include "umdev/vendor/gpu/direct_runner.h"
#include "umdev/vendor/gpu/engine.h"
#include "umdev/vendor/gpu/gpu_device.h"
#include "umdev/vendor/gpu/doorbell_poller.h"
#include "umdev/vendor/gpu/scheduler.h"

namespace umdev::vendor::gpu {

enum class Placement {
  kHeterogeneous,  // Any mix of types while memory and share last.
  kHomogeneous,    // The first instance fixes the type; other types report 0.
};

struct GpuParentOptions {
  std::string parent_name = "gpu0";
  EngineKind engine = EngineKind::kVulkan;
  uint32_t device_index = 0;  // Accelerator::index (Vulkan).
  // Split into eighths; a multiple of 8 pages.
  uint64_t memory = uint64_t{256} << 20;
  Placement placement = Placement::kHeterogeneous;
  uint16_t vendor_id = regs::kDefaultVendorId;
  uint16_t device_id = regs::kDefaultDeviceId;
  // Vulkan: the longest one command may run on the device before it fails
  // with ETIMEDOUT and the engine resets its device.
  std::chrono::milliseconds dispatch_timeout = VulkanEngineOptions{}.dispatch_timeout;
  // The parent's scheduler (best effort by default, as NVIDIA vGPU). Each
  // instance attaches with its type's compute share.
  SchedulerOptions scheduler;
  // The VM rules of every type (config "requires_vm", "one_per_vm"): kvmgt's
  // "KVM is required" (ESRCH) and one vGPU per VM per parent (EEXIST).
  VmPolicy vm_policy;
  // How long a device's doorbell page is polled after activity (config
  // "doorbell_spin_us"); 0: no doorbell page, every doorbell traps.
  std::chrono::nanoseconds doorbell_spin = DoorbellPollerOptions{}.spin;
};

// Types "1of1", "1of2", "1of4", "1of8" (directories gpu-1of1 ...): 1/N of the
// parent's memory and of its compute share, the description saying both
// ("memory=128M\ncompute_share=12.5%"). Each instance is a GpuDevice whose
// commands run on the parent's QueueRunner (a SchedulerRunner by default).
// Thread-safe.
class GpuParent final : public ParentDriver {
 public:
  // Creates the engine (Vulkan: ENODEV no such device; CPU). Errors: EINVAL
  // memory 0 or not a multiple of 8 pages; the engine's.
  static Result<std::shared_ptr<GpuParent>> Create(GpuParentOptions options);
  // The same over an engine the caller made, and with |runner| (null: a
  // SchedulerRunner with the options' scheduler) running every instance's
  // queue. Errors also: EINVAL a bad scheduler time slice.
  static Result<std::shared_ptr<GpuParent>> Create(GpuParentOptions options,
                                                   std::shared_ptr<Engine> engine,
                                                   std::shared_ptr<QueueRunner> runner = nullptr);

  std::string parent_name() const override { return options_.parent_name; }
  std::string driver_name() const override { return "gpu"; }
  std::vector<MdevTypeSpec> types() const override;
  // min(free eighths / type eighths), 0 for other types under homogeneous
  // placement once an instance exists.
  unsigned AvailableInstances(const MdevTypeSpec& type) override;
  // Errors: EINVAL unknown type; ENOSPC not enough memory or share left (or
  // another type under homogeneous placement); the engine's slice errors;
  // the runner's Attach() errors.
  Result<std::unique_ptr<DeviceOps>> Probe(const ProbeContext& context) override;

  // engine (its name), scheduler_policy and time_slice_us (as configured),
  // memory_total and memory_free (bytes of slice memory left),
  // doorbell_spin_us (as configured), doorbell_polling_ns (time the
  // doorbell poller spent polling: its CPU cost) and doorbell_rings
  // (doorbells it noticed without a trap).
  std::vector<std::string> AttributeNames() const override;
  Result<std::string> ReadAttribute(std::string_view name) const override;

  const std::shared_ptr<Engine>& engine() const { return engine_; }
  const std::shared_ptr<QueueRunner>& runner() const { return runner_; }
  unsigned free_eighths() const;

 private:
  struct Budget {
    Mutex mu;
    unsigned free_eighths UMDEV_GUARDED_BY(mu) = 8;
    unsigned instances UMDEV_GUARDED_BY(mu) = 0;
    unsigned instance_eighths UMDEV_GUARDED_BY(mu) = 0;  // Homogeneous: the type in use.
  };

  GpuParent(GpuParentOptions options, std::shared_ptr<Engine> engine,
            std::shared_ptr<irq::VirqfdLoop> loop, std::shared_ptr<QueueRunner> runner);
  static unsigned EighthsOf(const MdevTypeSpec& type);

  const GpuParentOptions options_;
  const std::shared_ptr<Engine> engine_;
  const std::shared_ptr<irq::VirqfdLoop> loop_;
  // Shared with the devices, which may outlive the parent.
  const std::shared_ptr<QueueRunner> runner_;
  const std::shared_ptr<Budget> budget_;
  // Polls every instance's doorbell page: one thread, started by the first
  // polled doorbell. Shared with the devices.
  const std::shared_ptr<DoorbellPoller> doorbell_poller_;
};

// The daemon's config entry {"driver": "gpu", ...}: "name" (default: the
// accelerator's PCI address, else gpu<index>; "gpu-cpu"), "engine"
// ("vulkan" or "cpu"), "device" (loader index, PCI address or a name
// substring; Vulkan only), "memory" (bytes, or "512M"/"1G"), "placement"
// ("heterogeneous"/"homogeneous"), "pci_id" ("VVVV:DDDD"), "scheduler"
// ({"policy": "best_effort"|"equal_share"|"fixed_share", "time_slice_us":
// N > 0}, both optional), "doorbell_spin_us" (0 .. 100000; 0: no doorbell
// page). Errors: EINVAL a bad or unknown key; ENODEV no
// matching accelerator; Create()'s.
Result<std::shared_ptr<ParentDriver>> MakeGpuParentFromConfig(const nlohmann::json& entry);

}  // namespace umdev::vendor::gpu
