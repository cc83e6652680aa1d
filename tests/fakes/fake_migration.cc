// FakeMigration.
#include "fake_migration.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "umdev/mdev_core/migration.h"

namespace umdev::testing {
namespace {

constexpr char kMagic[8] = {'U', 'M', 'D', 'E', 'V', 'M', 'I', 'G'};
constexpr size_t kHeaderSize = sizeof(kMagic) + sizeof(uint32_t);

std::vector<std::byte> Frame(const std::vector<std::byte>& payload) {
  std::array<std::byte, kHeaderSize> header{};
  std::memcpy(header.data(), kMagic, sizeof(kMagic));
  const auto length = static_cast<uint32_t>(payload.size());
  std::memcpy(header.data() + sizeof(kMagic), &length, sizeof(length));
  std::vector<std::byte> stream(header.begin(), header.end());
  stream.insert(stream.end(), payload.begin(), payload.end());
  return stream;
}

// The payload of a complete, well-formed stream, or nullopt.
std::optional<std::span<const std::byte>> Unframe(std::span<const std::byte> stream) {
  if (stream.size() < kHeaderSize || std::memcmp(stream.data(), kMagic, sizeof(kMagic)) != 0) {
    return std::nullopt;
  }
  uint32_t length = 0;
  std::memcpy(&length, stream.data() + sizeof(kMagic), sizeof(length));
  if (stream.size() != kHeaderSize + length) return std::nullopt;
  return stream.subspan(kHeaderSize);
}

}  // namespace

vfio_device_mig_state FakeMigration::GetState() {
  MutexLock lock(mu_);
  return state_;
}

Result<void> FakeMigration::SetState(vfio_device_mig_state next) {
  const int running = ++arcs_running_;
  int seen = max_concurrent_arcs_.load();
  while (running > seen && !max_concurrent_arcs_.compare_exchange_weak(seen, running)) {
  }
  std::shared_ptr<std::function<void()>> hook;
  {
    MutexLock lock(mu_);
    hook = arc_hook_;
  }
  if (hook != nullptr && *hook) (*hook)();
  Result<void> result = [&]() -> Result<void> {
    std::vector<std::byte> loaded;
    {
      MutexLock lock(mu_);
      const vfio_device_mig_state from = state_;
      arcs_.emplace_back(from, next);
      if (!IsMigrationArc(flags_, from, next)) {
        ++illegal_arcs_;
        return Fail(EINVAL, "fake migration: not a single arc");
      }
      if (fail_next_.has_value() && fail_next_->first == next) {
        const int code = fail_next_->second;
        fail_next_.reset();
        state_ = VFIO_DEVICE_STATE_ERROR;
        outgoing_.clear();
        incoming_.clear();
        return Fail(code, "fake migration: injected arc failure");
      }
      if (next == VFIO_DEVICE_STATE_STOP_COPY) {
        outgoing_ = Frame(save_());
        outgoing_pos_ = 0;
      } else if (!IsSavingState(next)) {
        outgoing_.clear();
        outgoing_pos_ = 0;
      }
      if (next == VFIO_DEVICE_STATE_RESUMING) incoming_.clear();
      if (from == VFIO_DEVICE_STATE_RESUMING) {
        const auto payload = Unframe(incoming_);
        if (!payload.has_value()) {
          state_ = VFIO_DEVICE_STATE_ERROR;
          incoming_.clear();
          return Fail(EINVAL, "fake migration: incomplete or malformed resume stream");
        }
        loaded.assign(payload->begin(), payload->end());
        incoming_.clear();
      }
      state_ = next;
      if (from != VFIO_DEVICE_STATE_RESUMING) return {};
    }
    load_(loaded);  // Outside mu_: it takes the device's own lock.
    return {};
  }();
  --arcs_running_;
  return result;
}

Result<uint64_t> FakeMigration::GetDataSize() { return kHeaderSize + save_().size(); }

Result<size_t> FakeMigration::ReadData(std::span<std::byte> out) {
  MutexLock lock(mu_);
  if (state_ != VFIO_DEVICE_STATE_STOP_COPY) {
    return Fail(ENOMSG, "fake migration: no pre-copy data (temporary end of stream)");
  }
  const size_t n = std::min(out.size(), outgoing_.size() - outgoing_pos_);
  std::memcpy(out.data(), outgoing_.data() + outgoing_pos_, n);
  outgoing_pos_ += n;
  return n;
}

Result<size_t> FakeMigration::WriteData(std::span<const std::byte> data) {
  MutexLock lock(mu_);
  incoming_.insert(incoming_.end(), data.begin(), data.end());
  return data.size();
}

Result<void> FakeMigration::Start(std::span<const SparseMmapArea> ranges, uint64_t page_size) {
  MutexLock lock(mu_);
  if (logging_) return Fail(EBUSY, "fake dma logging: already started");
  logging_ = true;
  log_page_size_ = page_size;
  log_ranges_.assign(ranges.begin(), ranges.end());
  dirty_pages_.clear();
  return {};
}

Result<void> FakeMigration::Stop() {
  MutexLock lock(mu_);
  logging_ = false;
  dirty_pages_.clear();
  return {};
}

Result<std::vector<uint64_t>> FakeMigration::ReadAndClear(uint64_t iova, uint64_t size,
                                                          uint64_t page_size) {
  MutexLock lock(mu_);
  if (!logging_) return Fail(EINVAL, "fake dma logging: not started");
  const uint64_t pages = (size - 1) / page_size + 1;
  std::vector<uint64_t> bitmap((pages + 63) / 64);
  const uint64_t end = iova + size;
  for (auto it = dirty_pages_.begin(); it != dirty_pages_.end();) {
    const uint64_t first = std::max(*it, iova);
    const uint64_t last = std::min(*it + log_page_size_, end);
    if (first >= last) {
      ++it;
      continue;
    }
    for (uint64_t bit = (first - iova) / page_size; bit <= (last - 1 - iova) / page_size; ++bit) {
      bitmap[bit / 64] |= uint64_t{1} << (bit % 64);
    }
    it = dirty_pages_.erase(it);
  }
  if (short_reports_) bitmap.pop_back();
  return bitmap;
}

void FakeMigration::OnReset() {
  if (arcs_running_ > 0) ++resets_during_arcs_;
  MutexLock lock(mu_);
  state_ = state_after_reset_;
  outgoing_.clear();
  outgoing_pos_ = 0;
  incoming_.clear();
}

void FakeMigration::set_state_after_reset(vfio_device_mig_state state) {
  MutexLock lock(mu_);
  state_after_reset_ = state;
}

void FakeMigration::FailNextArcTo(vfio_device_mig_state to, int code) {
  MutexLock lock(mu_);
  fail_next_ = std::make_pair(to, code);
}

void FakeMigration::set_arc_hook(std::function<void()> hook) {
  MutexLock lock(mu_);
  arc_hook_ = std::make_shared<std::function<void()>>(std::move(hook));
}

std::vector<FakeMigration::Arc> FakeMigration::arcs() const {
  MutexLock lock(mu_);
  return arcs_;
}

void FakeMigration::MarkDirty(uint64_t iova) {
  MutexLock lock(mu_);
  if (!logging_) return;
  for (const SparseMmapArea& range : log_ranges_) {
    if (iova >= range.offset && iova - range.offset < range.size) {
      dirty_pages_.insert(iova - iova % log_page_size_);
      return;
    }
  }
}

bool FakeMigration::logging() const {
  MutexLock lock(mu_);
  return logging_;
}

std::vector<SparseMmapArea> FakeMigration::logged_ranges() const {
  MutexLock lock(mu_);
  return log_ranges_;
}

}  // namespace umdev::testing
