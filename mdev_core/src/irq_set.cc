// SET_IRQS validation.
#include "umdev/mdev_core/irq_set.h"

#include <fmt/format.h>

#include "umdev/common/eventfd.h"

#include <bit>

namespace umdev {

Result<void> ValidateIrqSet(const IrqInfo& info, const IrqSet& set) {
  constexpr uint32_t kKnown = VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK;
  const auto context = [&](std::string_view why) {
    return fmt::format("set irqs index {} start {} count {}: {}", set.index, set.start, set.count,
                       why);
  };
  if ((set.flags & ~kKnown) != 0) return Fail(EINVAL, context("unknown flags"));
  const uint32_t data = set.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
  const uint32_t action = set.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
  if (std::popcount(data) != 1) return Fail(EINVAL, context("need exactly one data type"));
  if (std::popcount(action) != 1) return Fail(EINVAL, context("need exactly one action"));
  if (info.count == 0) return Fail(EINVAL, context("the IRQ has no vectors"));
  if (set.count == 0 && set.flags != (VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER)) {
    return Fail(EINVAL, context("count 0 is only DATA_NONE|ACTION_TRIGGER"));
  }
  if (set.start >= info.count || set.count > info.count - set.start) {
    return Fail(EINVAL, context(fmt::format("outside the IRQ's {} vectors", info.count)));
  }
  const size_t bools = data == VFIO_IRQ_SET_DATA_BOOL ? set.count : 0;
  const size_t fds = data == VFIO_IRQ_SET_DATA_EVENTFD ? set.count : 0;
  if (set.bools.size() != bools || set.fds.size() != fds) {
    return Fail(EINVAL, context("data does not match count"));
  }
  if (data == VFIO_IRQ_SET_DATA_EVENTFD && (info.flags & VFIO_IRQ_INFO_EVENTFD) == 0) {
    return Fail(EINVAL, context("the IRQ does not signal eventfds"));
  }
  // eventfd_ctx_fdget(): a trigger or resampler must be an eventfd; -1
  // de-assigns. A pipe or socket could fill and block the signalling thread.
  for (const UniqueFd& fd : set.fds) {
    if (fd.valid() && !IsEventFd(fd.get())) return Fail(EINVAL, context("fd is not an eventfd"));
  }
  return {};
}

}  // namespace umdev
