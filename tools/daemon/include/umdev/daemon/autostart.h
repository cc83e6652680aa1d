// Autostarter: starts the "start": "auto" definitions of a parent when it
// registers, as mdevctl's udev rule (start-parent-mdevs) does for the kernel.
#pragma once

#include <string>

#include "umdev/control/definition_store.h"
#include "umdev/mdev_core/registry.h"

namespace umdev::daemon {

// Called on whichever thread registers a parent (no registry lock held).
// Failures are logged and the next definition is tried, as mdevctl does.
class Autostarter : public RegistryObserver {
 public:
  Autostarter(Registry& registry, control::DefinitionStore& store)
      : registry_(registry), store_(store) {}

  void OnParentRegistered(const std::string& parent) override { StartParent(parent); }

  // Starts every auto definition of |parent| that is not running; returns
  // how many started.
  size_t StartParent(const std::string& parent);

 private:
  Registry& registry_;
  control::DefinitionStore& store_;
};

}  // namespace umdev::daemon
