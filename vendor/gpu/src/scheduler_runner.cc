// SchedulerRunner: QueueAttachment over Scheduler::Handle.
#include "umdev/vendor/gpu/scheduler_runner.h"

#include <utility>

namespace umdev::vendor::gpu {

namespace {

class SchedulerAttachment final : public QueueAttachment {
 public:
  explicit SchedulerAttachment(Scheduler::Handle handle) : handle_(std::move(handle)) {}
  ~SchedulerAttachment() override { handle_.Detach(); }

  void Kick() override { handle_.Kick(); }
  QueueStats Stats() const override { return handle_.Stats(); }

 private:
  Scheduler::Handle handle_;
};

}  // namespace

Result<std::shared_ptr<SchedulerRunner>> SchedulerRunner::Create(SchedulerOptions options) {
  UMDEV_ASSIGN_OR_RETURN(auto scheduler, Scheduler::Create(std::move(options)));
  return std::shared_ptr<SchedulerRunner>(new SchedulerRunner(std::move(scheduler)));
}

Result<std::unique_ptr<QueueAttachment>> SchedulerRunner::Attach(CommandQueue* queue,
                                                                 uint32_t share_permille) {
  UMDEV_ASSIGN_OR_RETURN(Scheduler::Handle handle, scheduler_->Attach(queue, share_permille));
  return std::unique_ptr<QueueAttachment>(std::make_unique<SchedulerAttachment>(std::move(handle)));
}

}  // namespace umdev::vendor::gpu
