// GroupBook: held groups, open functions, and what a bus reset may reach.
#include "group_book.h"

namespace umdev::passthrough {

void GroupBook::Add(const std::shared_ptr<HostGroup>& group) {
  MutexLock lock(mu_);
  groups_.try_emplace(group->number(), Entry{group, 0});
}

void GroupBook::Remove(unsigned number) {
  MutexLock lock(mu_);
  groups_.erase(number);
}

GroupBook::ResetScope GroupBook::ScopeLocked(unsigned resetting, bool own_held) const {
  ResetScope scope;
  for (const auto& [number, entry] : groups_) {
    if (number == resetting ? own_held : entry.open == 0) {
      scope.held.push_back(entry.group);
    } else {
      scope.in_use.push_back(number);
    }
  }
  return scope;
}

Result<void> GroupBook::Open(unsigned number, const std::function<Result<void>()>& open) {
  MutexLock lock(mu_);
  auto entry = groups_.find(number);
  if (entry == groups_.end()) return Fail(ENODEV, "IOMMU group " + std::to_string(number));
  UMDEV_TRY(open());
  ++entry->second.open;
  return {};
}

void GroupBook::Close(unsigned number, const std::function<void(const ResetScope&)>& reset) {
  MutexLock lock(mu_);
  auto entry = groups_.find(number);
  if (entry == groups_.end() || entry->second.open == 0) return;
  --entry->second.open;
  reset(ScopeLocked(number, entry->second.open == 0));
}

Result<void> GroupBook::Reset(unsigned number,
                              const std::function<Result<void>(const ResetScope&)>& reset) {
  MutexLock lock(mu_);
  if (!groups_.contains(number)) return Fail(ENODEV, "IOMMU group " + std::to_string(number));
  return reset(ScopeLocked(number, true));
}

}  // namespace umdev::passthrough
