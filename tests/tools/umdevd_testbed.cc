// umdevd_testbed: umdevd plus the test-only parent drivers ("driver": "test",
// and "test-pci" for the emulated PCI function), so integration tests can
// drive the real daemon and CLI before vendors exist.
#include "fakes/pci_test_device.h"
#include "fakes/test_parent.h"
#include "umdev/daemon/daemon.h"

int main(int argc, char** argv) {
  using umdev::testing::PciTestParentDriver;
  using umdev::testing::TestParentDriver;
  return umdev::daemon::RunUmdevd(argc, argv, [](umdev::daemon::Daemon& daemon) {
    daemon.AddParentFactory("test", [](const nlohmann::json& entry)
                                        -> umdev::Result<std::shared_ptr<umdev::ParentDriver>> {
      TestParentDriver::Options options;
      options.parent_name = entry.value("name", options.parent_name);
      options.max_instances = entry.value("max_instances", options.max_instances);
      options.features.attributes = entry.value("attributes", false);
      return std::make_shared<TestParentDriver>(options);
    });
    daemon.AddParentFactory("test-pci", [](const nlohmann::json& entry)
                                            -> umdev::Result<std::shared_ptr<umdev::ParentDriver>> {
      PciTestParentDriver::Options options;
      options.parent_name = entry.value("name", options.parent_name);
      options.max_instances = entry.value("max_instances", options.max_instances);
      return std::make_shared<PciTestParentDriver>(options);
    });
  });
}
