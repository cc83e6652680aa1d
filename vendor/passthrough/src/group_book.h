// GroupBook: the IOMMU groups the passthrough driver holds, and how many of
// each one's functions clients have open, so that a bus reset reaches only
// functions nobody uses. Opens, closes and resets of the driver's functions
// go through it one at a time: a client cannot open a function between the
// check and the reset. Thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/passthrough/host_vfio.h"

namespace umdev::passthrough {

class GroupBook {
 public:
  // Where a bus reset from one group may reach: every group held with no
  // function open (and the resetting group), and the held groups in use.
  struct ResetScope {
    std::vector<std::shared_ptr<HostGroup>> held;
    std::vector<unsigned> in_use;
  };

  void Add(const std::shared_ptr<HostGroup>& group) UMDEV_EXCLUDES(mu_);
  void Remove(unsigned number) UMDEV_EXCLUDES(mu_);

  // Runs |open| (which opens a function of |number|), counting it open when
  // it succeeds.
  Result<void> Open(unsigned number, const std::function<Result<void>()>& open)
      UMDEV_EXCLUDES(mu_);
  // Counts a function of |number| closed, then runs |reset| with the scope
  // a bus reset may reach: only when no other function of the group is
  // open may the scope hold the group itself.
  void Close(unsigned number, const std::function<void(const ResetScope&)>& reset)
      UMDEV_EXCLUDES(mu_);
  // Runs |reset| for an open function of |number| (a client's reset): the
  // group's functions all belong to that client (one container), so its
  // own group is always in the scope.
  Result<void> Reset(unsigned number, const std::function<Result<void>(const ResetScope&)>& reset)
      UMDEV_EXCLUDES(mu_);

 private:
  struct Entry {
    std::shared_ptr<HostGroup> group;
    unsigned open = 0;
  };
  // Other groups are in the scope when none of their functions is open;
  // |resetting| itself when |own_held|.
  ResetScope ScopeLocked(unsigned resetting, bool own_held) const UMDEV_REQUIRES(mu_);

  // Held across the kernel calls of |open| and |reset| (an open waits for
  // a bus reset in progress, which takes the kernel about a second).
  mutable Mutex mu_;
  std::map<unsigned, Entry> groups_ UMDEV_GUARDED_BY(mu_);
};

}  // namespace umdev::passthrough
