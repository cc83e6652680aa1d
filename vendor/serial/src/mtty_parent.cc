// MttyParent: the port budget and instance creation.
#include "umdev/vendor/serial/mtty_parent.h"

#include <fmt/format.h>

#include "mtty_device.h"

namespace umdev::vendor::serial {

Result<std::shared_ptr<MttyParent>> MttyParent::Create(MttyOptions options) {
  if (options.total_ports == 0) return Fail(EINVAL, "mtty: total_ports must be at least 1");
  UMDEV_ASSIGN_OR_RETURN(irq::VirqfdLoop loop, irq::VirqfdLoop::Create());
  auto shared_loop = std::make_shared<irq::VirqfdLoop>(std::move(loop));
  UMDEV_TRY(shared_loop->Start());
  return std::shared_ptr<MttyParent>(new MttyParent(std::move(options), std::move(shared_loop)));
}

MttyParent::MttyParent(MttyOptions options, std::shared_ptr<irq::VirqfdLoop> loop)
    : options_(std::move(options)), loop_(std::move(loop)), budget_(std::make_shared<Budget>()) {
  MutexLock lock(budget_->mu);
  budget_->free = options_.total_ports;
}

std::vector<MdevTypeSpec> MttyParent::types() const {
  return {MdevTypeSpec{.sysfs_name = "1", .pretty_name = "Single port serial", .description = {}},
          MdevTypeSpec{.sysfs_name = "2", .pretty_name = "Dual port serial", .description = {}}};
}

unsigned MttyParent::PortsOf(const MdevTypeSpec& type) {
  if (type.sysfs_name == "1") return 1;
  if (type.sysfs_name == "2") return 2;
  return 0;
}

unsigned MttyParent::free_ports() const {
  MutexLock lock(budget_->mu);
  return budget_->free;
}

unsigned MttyParent::AvailableInstances(const MdevTypeSpec& type) {
  const unsigned ports = PortsOf(type);
  return ports == 0 ? 0 : free_ports() / ports;
}

Result<std::unique_ptr<DeviceOps>> MttyParent::Probe(const ProbeContext& context) {
  const unsigned ports = PortsOf(context.type);
  if (ports == 0) return Fail(EINVAL, "mtty: unknown type " + context.type.sysfs_name);
  {
    MutexLock lock(budget_->mu);
    if (budget_->free < ports) {
      return Fail(ENOSPC, fmt::format("mtty: {} ports needed, {} free", ports, budget_->free));
    }
    budget_->free -= ports;
  }
  auto release = [budget = budget_, ports] {
    MutexLock lock(budget->mu);
    budget->free += ports;
  };
  return std::unique_ptr<DeviceOps>(new MttyDevice(ports, loop_, std::move(release)));
}

}  // namespace umdev::vendor::serial
