// GpuParent: types as fixed fractions, placement, and the config entry.
#include "umdev/vendor/gpu/gpu_parent.h"

#include <charconv>
#include <chrono>
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "umdev/mdev_core/dma.h"
#include "umdev/vendor/gpu/accelerator.h"
#include "umdev/vendor/gpu/scheduler_runner.h"

namespace umdev::vendor::gpu {
namespace {

constexpr unsigned kDenominators[] = {1, 2, 4, 8};

std::string HumanBytes(uint64_t bytes) {
  if (bytes % (uint64_t{1} << 30) == 0) return fmt::format("{}G", bytes >> 30);
  if (bytes % (uint64_t{1} << 20) == 0) return fmt::format("{}M", bytes >> 20);
  if (bytes % (uint64_t{1} << 10) == 0) return fmt::format("{}K", bytes >> 10);
  return std::to_string(bytes);
}

Result<uint64_t> ParseBytes(const nlohmann::json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (!value.is_string()) return Fail(EINVAL, "config: gpu parent: \"memory\"");
  const std::string text = value.get<std::string>();
  uint64_t number = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (ec != std::errc() || end == text.data()) return Fail(EINVAL, "config: gpu \"memory\"");
  const std::string_view suffix(end, text.data() + text.size() - end);
  unsigned shift = 0;
  if (suffix == "K") shift = 10;
  else if (suffix == "M") shift = 20;
  else if (suffix == "G") shift = 30;
  else if (!suffix.empty()) return Fail(EINVAL, "config: gpu \"memory\" suffix: K, M or G");
  if (number > (UINT64_MAX >> shift)) return Fail(EINVAL, "config: gpu \"memory\" too large");
  return number << shift;
}

// |device|: a loader index, a PCI address or a name substring; null: index 0.
Result<Accelerator> FindDevice(const nlohmann::json* device) {
  UMDEV_ASSIGN_OR_RETURN(std::vector<Accelerator> all, DiscoverAccelerators());
  if (device == nullptr || device->is_number_unsigned()) {
    const uint64_t index = device == nullptr ? 0 : device->get<uint64_t>();
    for (const Accelerator& a : all) {
      if (a.index == index) return a;
    }
    return Fail(ENODEV, fmt::format("config: gpu: no accelerator with index {}", index));
  }
  if (!device->is_string()) return Fail(EINVAL, "config: gpu \"device\"");
  const std::string want = device->get<std::string>();
  for (const Accelerator& a : all) {
    if (!a.pci_address.empty() && a.pci_address == want) return a;
  }
  for (const Accelerator& a : all) {
    if (a.name.find(want) != std::string::npos) return a;
  }
  return Fail(ENODEV, "config: gpu: no accelerator matches \"" + want + "\"");
}

}  // namespace

Result<std::shared_ptr<GpuParent>> GpuParent::Create(GpuParentOptions options) {
  std::shared_ptr<Engine> engine;
  if (options.engine == EngineKind::kCpu) {
    UMDEV_ASSIGN_OR_RETURN(engine, CreateCpuEngine({.memory_limit = options.memory}));
  } else {
    UMDEV_ASSIGN_OR_RETURN(engine,
                           CreateVulkanEngine({.device_index = options.device_index,
                                               .memory_limit = options.memory,
                                               .dispatch_timeout = options.dispatch_timeout}));
  }
  return Create(std::move(options), std::move(engine));
}

Result<std::shared_ptr<GpuParent>> GpuParent::Create(GpuParentOptions options,
                                                     std::shared_ptr<Engine> engine,
                                                     std::shared_ptr<QueueRunner> runner) {
  if (options.memory == 0 || options.memory % (8 * kPageSize) != 0) {
    return Fail(EINVAL, fmt::format("gpu: memory {:#x} is not a non-zero multiple of 8 pages",
                                    options.memory));
  }
  UMDEV_ASSIGN_OR_RETURN(irq::VirqfdLoop loop, irq::VirqfdLoop::Create());
  auto shared_loop = std::make_shared<irq::VirqfdLoop>(std::move(loop));
  UMDEV_TRY(shared_loop->Start());
  if (runner == nullptr) {
    UMDEV_ASSIGN_OR_RETURN(runner, SchedulerRunner::Create(options.scheduler));
  }
  return std::shared_ptr<GpuParent>(new GpuParent(std::move(options), std::move(engine),
                                                  std::move(shared_loop), std::move(runner)));
}

GpuParent::GpuParent(GpuParentOptions options, std::shared_ptr<Engine> engine,
                     std::shared_ptr<irq::VirqfdLoop> loop, std::shared_ptr<QueueRunner> runner)
    : options_(std::move(options)),
      engine_(std::move(engine)),
      loop_(std::move(loop)),
      runner_(std::move(runner)),
      budget_(std::make_shared<Budget>()),
      doorbell_poller_(std::make_shared<DoorbellPoller>(
          DoorbellPollerOptions{.spin = options_.doorbell_spin})) {}

std::vector<MdevTypeSpec> GpuParent::types() const {
  std::vector<MdevTypeSpec> out;
  for (unsigned n : kDenominators) {
    out.push_back(MdevTypeSpec{
        .sysfs_name = fmt::format("1of{}", n),
        .pretty_name = fmt::format("1/{} of {}", n, engine_->name()),
        .description = fmt::format("memory={}\ncompute_share={}%", HumanBytes(options_.memory / n),
                                   100.0 / n),
        .vm_policy = options_.vm_policy});
  }
  return out;
}

std::vector<std::string> GpuParent::AttributeNames() const {
  return {"engine",       "scheduler_policy", "time_slice_us",       "memory_total",
          "memory_free",  "doorbell_spin_us", "doorbell_polling_ns", "doorbell_rings"};
}

Result<std::string> GpuParent::ReadAttribute(std::string_view name) const {
  if (name == "engine") return engine_->name();
  if (name == "scheduler_policy") {
    return std::string(FormatSchedulingPolicy(options_.scheduler.policy));
  }
  if (name == "time_slice_us") return std::to_string(options_.scheduler.time_slice.count());
  if (name == "memory_total") return std::to_string(options_.memory);
  if (name == "memory_free") return std::to_string(options_.memory / 8 * free_eighths());
  if (name == "doorbell_spin_us") {
    return std::to_string(
        std::chrono::duration_cast<std::chrono::microseconds>(options_.doorbell_spin).count());
  }
  const DoorbellPollerStats doorbells = doorbell_poller_->Stats();
  if (name == "doorbell_polling_ns") return std::to_string(doorbells.polling.count());
  if (name == "doorbell_rings") return std::to_string(doorbells.rings);
  return Fail(ENOENT, "no parent attribute " + std::string(name));
}

unsigned GpuParent::EighthsOf(const MdevTypeSpec& type) {
  for (unsigned n : kDenominators) {
    if (type.sysfs_name == fmt::format("1of{}", n)) return 8 / n;
  }
  return 0;
}

unsigned GpuParent::free_eighths() const {
  MutexLock lock(budget_->mu);
  return budget_->free_eighths;
}

unsigned GpuParent::AvailableInstances(const MdevTypeSpec& type) {
  const unsigned eighths = EighthsOf(type);
  if (eighths == 0) return 0;
  MutexLock lock(budget_->mu);
  if (options_.placement == Placement::kHomogeneous && budget_->instances > 0 &&
      budget_->instance_eighths != eighths) {
    return 0;
  }
  return budget_->free_eighths / eighths;
}

Result<std::unique_ptr<DeviceOps>> GpuParent::Probe(const ProbeContext& context) {
  const unsigned eighths = EighthsOf(context.type);
  if (eighths == 0) return Fail(EINVAL, "gpu: unknown type " + context.type.sysfs_name);
  {
    MutexLock lock(budget_->mu);
    if (options_.placement == Placement::kHomogeneous && budget_->instances > 0 &&
        budget_->instance_eighths != eighths) {
      return Fail(ENOSPC, "gpu: homogeneous placement: another type is in use");
    }
    if (budget_->free_eighths < eighths) {
      return Fail(ENOSPC, fmt::format("gpu: {} eighths needed, {} free", eighths,
                                      budget_->free_eighths));
    }
    budget_->free_eighths -= eighths;
    budget_->instance_eighths = eighths;
    ++budget_->instances;
  }
  auto release = [budget = budget_, eighths] {
    MutexLock lock(budget->mu);
    budget->free_eighths += eighths;
    --budget->instances;
  };
  auto slice = engine_->CreateSlice(options_.memory / 8 * eighths);
  if (!slice) {
    release();
    return std::unexpected(slice.error());
  }
  GpuDeviceOptions device{.vendor_id = options_.vendor_id,
                          .device_id = options_.device_id,
                          .compute_share_permille = 125 * eighths,
                          .builtin_kernels_only = engine_->kind() == EngineKind::kCpu,
                          .doorbell_poller = doorbell_poller_};
  // The device keeps the runner and the loop alive: it may outlive the parent.
  auto on_destroy = [release, runner = runner_, loop = loop_] { release(); };
  auto instance = std::make_unique<GpuDevice>(device, std::move(*slice), context.dma, *runner_,
                                              loop_.get(), std::move(on_destroy));
  // Destroying the refused device gives its memory and eighths back.
  UMDEV_TRY(instance->attach_result());
  return std::unique_ptr<DeviceOps>(std::move(instance));
}

namespace {

// A minute-long dispatch already stalls every other instance on the parent
// for as long; more is surely a typo.
constexpr uint64_t kMaxDispatchTimeoutMs = 60'000;
// A tenth of a second of spinning after each doorbell is already a core kept
// busy for a guest that rings ten times a second.
constexpr uint64_t kMaxDoorbellSpinUs = 100'000;

Result<SchedulerOptions> ParseSchedulerConfig(const nlohmann::json& value) {
  if (!value.is_object()) {
    return Fail(EINVAL, "config: gpu parent: \"scheduler\" is an object {\"policy\", "
                        "\"time_slice_us\"}");
  }
  SchedulerOptions options;
  for (const auto& [key, item] : value.items()) {
    if (key == "policy" && item.is_string()) {
      auto policy = ParseSchedulingPolicy(item.get<std::string>());
      if (!policy) return Fail(EINVAL, "config: gpu parent: scheduler: " + policy.error().context);
      options.policy = *policy;
    } else if (key == "time_slice_us" && item.is_number_unsigned() &&
               item.get<uint64_t>() > 0 && item.get<uint64_t>() <= 1'000'000) {
      options.time_slice = std::chrono::microseconds(item.get<uint64_t>());
    } else {
      return Fail(EINVAL, fmt::format("config: gpu parent: scheduler: bad or unknown key \"{}\" "
                                      "(policy: best_effort, equal_share or fixed_share; "
                                      "time_slice_us: 1..1000000)",
                                      key));
    }
  }
  return options;
}

}  // namespace

Result<std::shared_ptr<ParentDriver>> MakeGpuParentFromConfig(const nlohmann::json& entry) {
  GpuParentOptions options;
  bool named = false;
  const nlohmann::json* device = nullptr;
  bool timeout_given = false;
  for (const auto& [key, value] : entry.items()) {
    if (key == "driver") continue;
    if (key == "name" && value.is_string() && !value.get<std::string>().empty()) {
      options.parent_name = value.get<std::string>();
      named = true;
    } else if (key == "engine" && value.is_string() &&
               (value == "vulkan" || value == "cpu")) {
      options.engine = value == "cpu" ? EngineKind::kCpu : EngineKind::kVulkan;
    } else if (key == "device") {
      device = &value;
    } else if (key == "memory") {
      UMDEV_ASSIGN_OR_RETURN(options.memory, ParseBytes(value));
    } else if (key == "placement" && value.is_string() &&
               (value == "heterogeneous" || value == "homogeneous")) {
      options.placement =
          value == "homogeneous" ? Placement::kHomogeneous : Placement::kHeterogeneous;
    } else if (key == "scheduler") {
      UMDEV_ASSIGN_OR_RETURN(options.scheduler, ParseSchedulerConfig(value));
    } else if (key == "dispatch_timeout_ms" && value.is_number_unsigned() &&
               value.get<uint64_t>() > 0 && value.get<uint64_t>() <= kMaxDispatchTimeoutMs) {
      options.dispatch_timeout = std::chrono::milliseconds(value.get<uint64_t>());
      timeout_given = true;
    } else if (key == "doorbell_spin_us" && value.is_number_unsigned() &&
               value.get<uint64_t>() <= kMaxDoorbellSpinUs) {
      options.doorbell_spin = std::chrono::microseconds(value.get<uint64_t>());
    } else if (key == "requires_vm" && value.is_boolean()) {
      options.vm_policy.requires_vm = value.get<bool>();
    } else if (key == "one_per_vm" && value.is_boolean()) {
      options.vm_policy.one_per_vm = value.get<bool>();
    } else if (key == "pci_id" && value.is_string()) {
      unsigned vendor = 0, dev = 0;
      const std::string text = value.get<std::string>();
      if (text.size() != 9 || text[4] != ':' ||
          std::sscanf(text.c_str(), "%4x:%4x", &vendor, &dev) != 2) {
        return Fail(EINVAL, "config: gpu parent: \"pci_id\" is VVVV:DDDD in hex");
      }
      options.vendor_id = static_cast<uint16_t>(vendor);
      options.device_id = static_cast<uint16_t>(dev);
    } else {
      return Fail(EINVAL, fmt::format("config: gpu parent: bad or unknown key \"{}\"", key));
    }
  }
  if (options.engine == EngineKind::kCpu) {
    if (device != nullptr) return Fail(EINVAL, "config: gpu parent: \"device\" with cpu engine");
    // The CPU engine's built-in kernels always end: nothing to time out.
    if (timeout_given) {
      return Fail(EINVAL, "config: gpu parent: \"dispatch_timeout_ms\" with cpu engine");
    }
    if (!named) options.parent_name = "gpu-cpu";
  } else {
    UMDEV_ASSIGN_OR_RETURN(const Accelerator accelerator, FindDevice(device));
    options.device_index = accelerator.index;
    if (!named) {
      options.parent_name = accelerator.pci_address.empty()
                                ? fmt::format("gpu{}", accelerator.index)
                                : accelerator.pci_address;
    }
  }
  UMDEV_ASSIGN_OR_RETURN(auto parent, GpuParent::Create(std::move(options)));
  return std::shared_ptr<ParentDriver>(std::move(parent));
}

}  // namespace umdev::vendor::gpu
