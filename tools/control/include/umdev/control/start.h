// StartMdev: create an instance and write its attributes in order, as
// mdevctl's start does; shared by the control "start" verb and autostart.
#pragma once

#include <optional>
#include <string>

#include "umdev/common/error.h"
#include "umdev/common/uuid.h"
#include "umdev/control/definition.h"
#include "umdev/mdev_core/registry.h"

namespace umdev::control {

// Which attribute stopped a start, for mdevctl's messages.
struct AttributeFailure {
  std::string name;
  std::string value;
  bool exists = false;  // false: "Invalid attribute"; true: the write failed.
};

// Creates |uuid| and writes |attrs| in order; if one is missing or refused the
// instance is removed again and |failure| (if given) names it. Thread-safe.
// Errors: the registry's (ENODEV, EEXIST, EUSERS, ...); ENOENT a missing
// attribute; the attribute write's errno.
Result<void> StartMdev(Registry& registry, const std::string& parent, const std::string& type,
                       const Uuid& uuid, const AttributeList& attrs,
                       std::optional<AttributeFailure>* failure = nullptr);

}  // namespace umdev::control
