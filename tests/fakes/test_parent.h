// TestParentDriver and TestDevice: a test-only vendor whose behaviour each
// test sets (probe failures, capacity, how it answers removal requests).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fakes/fake_migration.h"
#include "umdev/common/mutex.h"
#include "umdev/common/uuid.h"
#include "umdev/mdev_core/dma_access.h"
#include "umdev/mdev_core/parent_driver.h"

namespace umdev::testing {

// Two instance UUIDs the core's tests create devices under.
inline const Uuid kUuid1 = Uuid::Parse("11111111-1111-4111-8111-111111111111").value();
inline const Uuid kUuid2 = Uuid::Parse("22222222-2222-4222-8222-222222222222").value();

// What a TestDevice offers beyond the basics.
struct TestDeviceFeatures {
  uint64_t migration_flags = 0;  // VFIO_MIGRATION_*; 0: no MigrationOps.
  bool dirty_log = false;        // Whether it has DirtyLogOps.
  // Attributes "label" (read-write; "bad" is refused with EINVAL), "serial"
  // (read-only), "secret" (write-only) and "vendor/knob" (read-write).
  bool attributes = false;
};

// A device with one 256-byte config region (index VFIO_PCI_CONFIG_REGION_INDEX)
// backed by memory, INTx and REQ interrupts, and pins it drops on unmap.
// Optionally migratable (its config bytes are the migrated state) and with
// DMA logging, both through a FakeMigration. Thread-safe.
class TestDevice final : public DeviceOps, public DmaUnmapListener {
 public:
  struct Counters {
    std::atomic<int> opens{0};
    std::atomic<int> closes{0};
    std::atomic<int> requests{0};
    std::atomic<int> resets{0};
    std::atomic<int> unmap_calls{0};
    std::atomic<int> removed{0};
  };

  using Features = TestDeviceFeatures;

  TestDevice(DmaAccess& dma, std::shared_ptr<Counters> counters, bool has_listener,
             bool pins_pages, std::function<void()> on_remove, Features features = {});
  ~TestDevice() override;

  Result<void> Open(const OpenContext& context) override;
  void Close() override;
  DeviceInfo GetInfo() override { return DeviceInfo{}; }
  Result<RegionInfo> GetRegionInfo(uint32_t index) override;
  Result<size_t> RegionRead(uint32_t index, uint64_t offset, std::span<std::byte> out) override;
  Result<size_t> RegionWrite(uint32_t index, uint64_t offset,
                             std::span<const std::byte> data) override;
  Result<IrqInfo> GetIrqInfo(uint32_t index) override;
  Result<void> SetIrqs(IrqSet& set) override;
  Result<void> Reset() override;
  void Request(unsigned count) override;
  bool pins_pages() const override { return pins_pages_; }
  DmaUnmapListener* dma_unmap_listener() override { return has_listener_ ? this : nullptr; }
  MigrationOps* migration() override {
    return features_.migration_flags != 0 ? &migration_ : nullptr;
  }
  DirtyLogOps* dirty_log() override { return features_.dirty_log ? &migration_ : nullptr; }
  void OnDmaUnmap(uint64_t iova, uint64_t size) override;
  std::vector<DeviceAttribute> Attributes() override;
  Result<std::string> ReadAttribute(std::string_view name) override;
  Result<void> WriteAttribute(std::string_view name, std::string_view value) override;

  // The VM the last first-open was given (OpenContext::vm), while the core
  // still holds it: a vendor keeps it no longer than until Close().
  std::shared_ptr<const Vm> opened_vm() const {
    MutexLock lock(mu_);
    return opened_vm_.lock();
  }

  // Pins through the core and keeps the pin until unmap, close or Drop().
  Result<void> PinAndHold(uint64_t iova, int npage, uint32_t prot);
  size_t held_pins() const;
  // When set, Request() runs it (e.g. to make the "user" close its handle).
  void set_on_request(std::function<void()> fn);
  // When set, OnDmaUnmap() keeps the pins (a misbehaving vendor).
  void set_refuse_unpin(bool refuse) { refuse_unpin_ = refuse; }
  DmaAccess& dma() { return dma_; }
  // The migration and DMA logging behind migration() and dirty_log().
  FakeMigration& fake_migration() { return migration_; }

 private:
  DmaAccess& dma_;
  std::shared_ptr<Counters> counters_;
  const bool has_listener_;
  const bool pins_pages_;
  const std::function<void()> on_remove_;
  const Features features_;
  std::atomic<bool> refuse_unpin_{false};
  mutable Mutex mu_;
  std::vector<std::byte> config_ UMDEV_GUARDED_BY(mu_) = std::vector<std::byte>(256);
  std::vector<PinnedPages> pins_ UMDEV_GUARDED_BY(mu_);
  std::string label_ UMDEV_GUARDED_BY(mu_) = "none";
  std::string knob_ UMDEV_GUARDED_BY(mu_) = "0";
  std::weak_ptr<const Vm> opened_vm_ UMDEV_GUARDED_BY(mu_);
  // Shared so a stateful hook keeps its state across calls.
  std::shared_ptr<std::function<void()>> on_request_ UMDEV_GUARDED_BY(mu_);
  // Declared last: its save/load callbacks use config_ and mu_.
  FakeMigration migration_;
};

// A parent whose types, capacity and probe outcome the test chooses.
// Thread-safe.
class TestParentDriver final : public ParentDriver {
 public:
  struct Options {
    std::string parent_name = "test_parent";
    std::string driver_name = "test";
    std::vector<MdevTypeSpec> types = {{"a", "Type A", "first test type"}, {"b", "", ""}};
    unsigned max_instances = 4;  // 0: per-type capacity from |per_type_capacity|.
    unsigned per_type_capacity = 2;
    bool has_listener = true;
    bool pins_pages = false;  // Declared to the core at registration.
    std::string device_api = "vfio-pci";
    TestDevice::Features features;  // Migration and DMA logging of its devices.
    // The parent's own read-only attributes and their values.
    std::map<std::string, std::string> parent_attributes;
  };

  explicit TestParentDriver(Options options);

  std::string parent_name() const override { return options_.parent_name; }
  std::string driver_name() const override { return options_.driver_name; }
  std::string device_api() const override { return options_.device_api; }
  std::vector<MdevTypeSpec> types() const override { return options_.types; }
  unsigned max_instances() const override { return options_.max_instances; }
  unsigned AvailableInstances(const MdevTypeSpec& type) override;
  Result<std::unique_ptr<DeviceOps>> Probe(const ProbeContext& context) override;
  std::vector<std::string> AttributeNames() const override {
    std::vector<std::string> names;
    for (const auto& [name, value] : options_.parent_attributes) names.push_back(name);
    return names;
  }
  Result<std::string> ReadAttribute(std::string_view name) const override {
    const auto it = options_.parent_attributes.find(std::string(name));
    if (it == options_.parent_attributes.end()) return Fail(ENOENT, "no parent attribute");
    return it->second;
  }

  // The next probe fails with |code|.
  void FailNextProbe(int code) { fail_next_probe_ = code; }
  // Runs inside Probe(), before it succeeds (to widen race windows).
  void set_probe_hook(std::function<void()> hook);
  // The device probed for |uuid|, or null; valid until it is removed.
  TestDevice* device(const Uuid& uuid) const;
  const std::shared_ptr<TestDevice::Counters>& counters() const { return counters_; }
  int probes() const { return probes_; }

 private:
  const Options options_;
  std::shared_ptr<TestDevice::Counters> counters_ = std::make_shared<TestDevice::Counters>();
  std::atomic<int> fail_next_probe_{0};
  std::atomic<int> probes_{0};
  mutable Mutex mu_;
  std::function<void()> probe_hook_ UMDEV_GUARDED_BY(mu_);
  struct Live {
    Uuid uuid;
    std::string type;
    TestDevice* device;  // Not owned: the core owns it; erased by its destructor.
  };
  std::vector<Live> live_ UMDEV_GUARDED_BY(mu_);
};

}  // namespace umdev::testing
