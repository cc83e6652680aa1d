// DefinitionStore: persistent mdev definitions in mdevctl's layout,
// DIR/<parent>/<uuid>, each file one config object (see definition.h).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/common/uuid.h"
#include "umdev/control/definition.h"

namespace umdev::control {

struct StoredDefinition {
  std::string parent;
  Uuid uuid;
  Definition definition;
};

// Thread-safe: control connections and autostart call it concurrently. The
// daemon is the only writer of DIR, so a mutex is all the serialisation needed.
class DefinitionStore {
 public:
  explicit DefinitionStore(std::string dir) : dir_(std::move(dir)) {}

  const std::string& dir() const { return dir_; }

  // Every readable definition, by parent then UUID (mdevctl's order). Files
  // that are not named by a UUID or do not parse are logged and skipped.
  std::vector<StoredDefinition> List(const std::optional<std::string>& parent = std::nullopt) const
      UMDEV_EXCLUDES(mu_);
  enum class Mode { kCreate, kReplace, kCreateOrReplace };
  // Writes DIR/<parent>/<uuid> atomically (temp file + rename).
  // Errors: EINVAL a parent that is not a plain name; EEXIST it exists and
  // |mode| is kCreate; ENOENT it does not and |mode| is kReplace; I/O errno.
  Result<void> Write(const std::string& parent, const Uuid& uuid, const Definition& definition,
                     Mode mode) UMDEV_EXCLUDES(mu_);
  // Errors: ENOENT not defined; EINVAL bad parent name; unlink errno.
  Result<void> Remove(const std::string& parent, const Uuid& uuid) UMDEV_EXCLUDES(mu_);
  // Deletes DIR/<parent>/<uuid>.tmp files: writes a killed daemon did not
  // finish (the definition it replaced, if any, is intact). Only the daemon
  // that holds the state dir may call it. Returns how many it removed.
  size_t RemoveUnfinishedWrites() UMDEV_EXCLUDES(mu_);

 private:
  std::string PathOf(const std::string& parent, const Uuid& uuid) const;

  const std::string dir_;
  mutable Mutex mu_;
};

// A parent name usable as one path component (no '/', not "." or "..").
bool IsPlainName(const std::string& name);

}  // namespace umdev::control
