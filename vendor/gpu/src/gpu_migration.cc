// GpuDevice's migration (docs/gpu-migration.md): single arcs of the VFIO
// migration v2 state machine, a saving stream that sends the slice during
// PRE_COPY and re-sends what changed, and a resuming stream checked as it
// arrives.
#include <linux/pci_regs.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

#include "umdev/mdev_core/dma.h"
#include "umdev/mdev_core/migration.h"
#include "umdev/vendor/gpu/gpu_device.h"

namespace umdev::vendor::gpu {
namespace {

using namespace regs;  // NOLINT: the register map is this file's vocabulary.
using State = vfio_device_mig_state;

constexpr uint64_t kMagic = 0x5550474556454d55;  // "UMDEVGPU" read as LE.
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderSize = 32;
constexpr size_t kRecordHeaderSize = 16;
constexpr uint32_t kRecordPages = 1;
constexpr uint32_t kRecordDevice = 2;
constexpr uint32_t kRecordEnd = 3;
// Pages per PAGES record at most, and per window a pass reads at once.
constexpr uint64_t kWindowPages = 64;
constexpr size_t kMsixTableSize = kMsixPbaOffset - kMsixTableOffset;
// The DEVICE record without the configuration space.
constexpr size_t kDeviceFixedSize = 8 + 4 * 4 + 8 + 6 * 4 + 4 * 8 + kMsixTableSize + 4;

class Writer {
 public:
  explicit Writer(std::vector<std::byte>& out) : out_(out) {}
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void Bytes(std::span<const std::byte> b) { out_.insert(out_.end(), b.begin(), b.end()); }

 private:
  void Le(uint64_t v, unsigned bytes) {
    for (unsigned i = 0; i < bytes; ++i) out_.push_back(static_cast<std::byte>(v >> (8 * i)));
  }
  std::vector<std::byte>& out_;
};

// Reads fields from a span the caller has checked is long enough.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  uint32_t U32() { return static_cast<uint32_t>(Le(4)); }
  uint64_t U64() { return Le(8); }
  std::span<const std::byte> Take(size_t n) {
    auto out = in_.subspan(pos_, n);
    pos_ += n;
    return out;
  }

 private:
  uint64_t Le(unsigned bytes) {
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; ++i) v |= std::to_integer<uint64_t>(in_[pos_ + i]) << (8 * i);
    pos_ += bytes;
    return v;
  }
  std::span<const std::byte> in_;
  size_t pos_ = 0;
};

bool IsRunning(State s) {
  return s == VFIO_DEVICE_STATE_RUNNING || s == VFIO_DEVICE_STATE_RUNNING_P2P ||
         s == kVfioStatePreCopy || s == kVfioStatePreCopyP2P;
}

uint64_t PageHash(std::span<const std::byte> page) {
  return std::hash<std::string_view>{}(
      std::string_view(reinterpret_cast<const char*>(page.data()), page.size()));
}

std::unexpected<Error> Malformed(std::string_view why) {
  return Fail(EINVAL, fmt::format("gpu: malformed migration stream: {}", why));
}

}  // namespace

uint64_t GpuDevice::flags() const {
  return VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | kVfioMigrationPreCopy;
}

vfio_device_mig_state GpuDevice::GetState() {
  MutexLock lock(mig_mu_);
  return mig_state_;
}

void GpuDevice::MarkSliceDirty(uint64_t offset, uint64_t size) {
  const uint64_t slice_size = slice_->size();
  if (size == 0 || offset >= slice_size) return;
  const uint64_t end = offset + std::min(size, slice_size - offset);
  // std::fill sets whole words of a vector<bool>: a DISPATCH marks the whole
  // slice on every command, so a bit at a time would cost a pass per page.
  std::fill(dirty_pages_.begin() + static_cast<ptrdiff_t>(offset / kPageSize),
            dirty_pages_.begin() + static_cast<ptrdiff_t>((end + kPageSize - 1) / kPageSize),
            true);
}

void GpuDevice::Quiesce() {
  {
    MutexLock lock(mu_);
    quiesced_ = true;
    while (running_) cv_.Wait(mu_);
  }
  // Entries are atomic to the guest: HEAD moves only when one completes. A
  // COPY or FILL stopped between pieces is run to its end here, so the ring
  // is saved at an entry boundary and the stream needs no partial state.
  while (RunPiece(true).has_value()) {
  }
}

void GpuDevice::Unquiesce() {
  {
    MutexLock lock(mu_);
    if (!quiesced_) return;
    quiesced_ = false;
  }
  attachment_->Kick();  // Entries submitted while stopped (or restored) run now.
}

void GpuDevice::DropMigration() {
  {
    MutexLock lock(mig_mu_);
    saving_.reset();
    resuming_.reset();
    mig_state_ = VFIO_DEVICE_STATE_RUNNING;
  }
  Unquiesce();
}

Result<void> GpuDevice::SetState(vfio_device_mig_state next) {
  MutexLock lock(mig_mu_);
  const State cur = mig_state_;
  if (next == cur) return {};
  if (!IsMigrationArc(flags(), cur, next)) {
    // Not a single arc (the core never asks for one), or out of ERROR,
    // which only a reset leaves. Nothing changed.
    return Fail(EINVAL, fmt::format("gpu: no migration arc from {} to {}",
                                    MigrationStateName(cur), MigrationStateName(next)));
  }
  if (cur == VFIO_DEVICE_STATE_RESUMING) {  // -> STOP: the stream must be whole.
    ResumingStream stream = std::move(*resuming_);
    resuming_.reset();
    Result<void> loaded;
    if (stream.broken) {
      loaded = std::unexpected(*stream.broken);
    } else if (!stream.end_seen || !stream.in.empty()) {
      loaded = Malformed("truncated");
    } else {
      loaded = LoadDeviceState(stream.device);
    }
    mig_state_ = loaded.has_value() ? next : VFIO_DEVICE_STATE_ERROR;
    return loaded;
  }
  if (next == VFIO_DEVICE_STATE_RESUMING) {
    // Assigned, not emplace()d: clang 16 does not see these nested structs
    // with member initializers as default-constructible (the fuzz build).
    resuming_ = ResumingStream{};
    mig_state_ = next;
    return {};
  }
  if (IsRunning(cur) && !IsRunning(next)) Quiesce();
  if (IsSavingState(next) && !IsSavingState(cur)) {
    saving_ = SavingStream{};
    const uint64_t pages = (slice_->size() + kPageSize - 1) / kPageSize;
    saving_->sent_hash.assign(pages, 0);
    saving_->sent.assign(pages, false);
    Writer w(saving_->out);
    w.U64(kMagic);
    w.U32(kVersion);
    w.U32(static_cast<uint32_t>(kPageSize));
    w.U64(slice_->size());
    w.U32(0);  // flags
    w.U32(0);  // reserved
  }
  if (!IsSavingState(next)) saving_.reset();
  if (next == VFIO_DEVICE_STATE_STOP_COPY) {
    // A last pass over every page, then the device state.
    saving_->final = true;
    saving_->scan_page = 0;
    saving_->pass_ended = false;
  }
  mig_state_ = next;
  if (!IsRunning(cur) && IsRunning(next)) Unquiesce();
  return {};
}

Result<uint64_t> GpuDevice::GetDataSize() {
  uint32_t config_size = 0;
  {
    MutexLock lock(mu_);
    config_size = config_.size();
  }
  const uint64_t pages = (slice_->size() + kPageSize - 1) / kPageSize;
  const uint64_t records = (pages + kWindowPages - 1) / kWindowPages;
  // An upper bound: every page once, in records of a window at most.
  return kHeaderSize + slice_->size() + records * (kRecordHeaderSize + 8) + kRecordHeaderSize +
         kDeviceFixedSize + config_size + kRecordHeaderSize;
}

bool GpuDevice::ProduceRecord() {
  SavingStream& s = *saving_;
  if (s.done) return false;
  const uint64_t slice_size = slice_->size();
  const uint64_t pages = s.sent.size();
  std::vector<std::byte> window(kWindowPages * kPageSize);
  while (s.scan_page < pages) {
    const uint64_t first = s.scan_page;
    const uint64_t count = std::min(kWindowPages, pages - first);
    const uint64_t bytes = std::min(count * kPageSize, slice_size - first * kPageSize);
    std::vector<bool> changed(count, false);
    {
      // The read and the dirty bits agree: a command or trapped write after
      // this marks its pages again for the next pass.
      MutexLock exec(exec_mu_);
      if (!slice_->Read(first * kPageSize, std::span(window).first(bytes)).has_value()) {
        // A lost device: send the pages as they read (zeros) rather than
        // stall the stream; the destination's commands fail the same way.
        std::fill_n(window.begin(), bytes, std::byte{0});
      }
      for (uint64_t i = 0; i < count; ++i) {
        const uint64_t page = first + i;
        const auto data =
            std::span(window).subspan(i * kPageSize, std::min(kPageSize, bytes - i * kPageSize));
        const uint64_t hash = PageHash(data);
        changed[i] = !s.sent[page] || dirty_pages_[page] || s.sent_hash[page] != hash;
        if (changed[i]) {
          dirty_pages_[page] = false;
          s.sent[page] = true;
          s.sent_hash[page] = hash;
        }
      }
    }
    s.scan_page = first + count;
    bool any = false;
    for (uint64_t i = 0; i < count;) {
      if (!changed[i]) {
        ++i;
        continue;
      }
      uint64_t run = i;
      while (run < count && changed[run]) ++run;
      const uint64_t offset = (first + i) * kPageSize;
      const uint64_t len = std::min(run * kPageSize, bytes) - i * kPageSize;
      Writer w(s.out);
      w.U32(kRecordPages);
      w.U32(0);
      w.U64(8 + len);
      w.U64(offset);
      w.Bytes(std::span(window).subspan(i * kPageSize, len));
      any = true;
      i = run;
    }
    if (any) return true;
  }
  if (!s.final) return false;  // This pre-copy pass is over.
  const std::vector<std::byte> device = EncodeDeviceState();
  Writer w(s.out);
  w.U32(kRecordDevice);
  w.U32(0);
  w.U64(device.size());
  w.Bytes(device);
  w.U32(kRecordEnd);
  w.U32(0);
  w.U64(0);
  s.done = true;
  return true;
}

Result<size_t> GpuDevice::ReadData(std::span<std::byte> out) {
  MutexLock lock(mig_mu_);
  if (!saving_) return Fail(EINVAL, "gpu: no saving migration stream");
  SavingStream& s = *saving_;
  if (s.pass_ended) {  // The end of a pass reads as 0 bytes once.
    s.pass_ended = false;
    s.scan_page = 0;
    return size_t{0};
  }
  size_t n = 0;
  while (n < out.size()) {
    if (s.out_pos < s.out.size()) {
      const size_t take = std::min(out.size() - n, s.out.size() - s.out_pos);
      std::memcpy(out.data() + n, s.out.data() + s.out_pos, take);
      s.out_pos += take;
      n += take;
      continue;
    }
    s.out.clear();
    s.out_pos = 0;
    if (!ProduceRecord()) {
      if (!s.done) {  // Pre-copy: the next read starts a new pass.
        s.scan_page = 0;
        s.pass_ended = n > 0;
      }
      break;
    }
  }
  return n;
}

Result<umdev::PrecopyInfo> GpuDevice::GetPrecopyInfo() {
  UMDEV_ASSIGN_OR_RETURN(const GpuPrecopyInfo info, PrecopyInfo());
  return umdev::PrecopyInfo{.initial_bytes = info.initial_bytes, .dirty_bytes = info.dirty_bytes};
}

Result<GpuPrecopyInfo> GpuDevice::PrecopyInfo() {
  MutexLock lock(mig_mu_);
  if (!saving_ || (mig_state_ != kVfioStatePreCopy && mig_state_ != kVfioStatePreCopyP2P)) {
    return Fail(EINVAL, "gpu: pre-copy info outside PRE_COPY");
  }
  const SavingStream& s = *saving_;
  GpuPrecopyInfo info{.initial_bytes = s.out.size() - s.out_pos};
  const uint64_t slice_size = slice_->size();
  std::vector<std::byte> page(kPageSize);
  MutexLock exec(exec_mu_);
  for (uint64_t p = 0; p < s.sent.size(); ++p) {
    const uint64_t len = std::min(kPageSize, slice_size - p * kPageSize);
    if (!s.sent[p]) {
      info.initial_bytes += len;
      continue;
    }
    const auto data = std::span(page).first(len);
    if (!slice_->Read(p * kPageSize, data).has_value()) continue;
    if (dirty_pages_[p] || PageHash(data) != s.sent_hash[p]) info.dirty_bytes += len;
  }
  return info;
}

Result<size_t> GpuDevice::WriteData(std::span<const std::byte> data) {
  MutexLock lock(mig_mu_);
  if (!resuming_) return Fail(EINVAL, "gpu: no resuming migration stream");
  if (resuming_->broken) return std::unexpected(*resuming_->broken);
  resuming_->in.insert(resuming_->in.end(), data.begin(), data.end());
  if (auto consumed = ConsumeRecords(); !consumed.has_value()) {
    resuming_->broken = consumed.error();
    return std::unexpected(consumed.error());
  }
  return data.size();
}

Result<void> GpuDevice::ConsumeRecords() {
  ResumingStream& r = *resuming_;
  const uint64_t slice_size = slice_->size();
  size_t pos = 0;
  const auto rest = [&] { return std::span<const std::byte>(r.in).subspan(pos); };
  if (!r.header_seen) {
    if (r.in.size() < kHeaderSize) return {};
    Reader h(rest());
    if (h.U64() != kMagic) return Malformed("bad magic");
    if (h.U32() != kVersion) return Malformed("unknown version");
    if (h.U32() != kPageSize) return Malformed("page size");
    if (const uint64_t size = h.U64(); size != slice_size) {
      return Fail(EINVAL, fmt::format("gpu: migration stream of a {}-byte slice, this one has {}",
                                      size, slice_size));
    }
    if (h.U32() != 0 || h.U32() != 0) return Malformed("header flags");
    r.header_seen = true;
    pos = kHeaderSize;
  }
  while (rest().size() >= kRecordHeaderSize) {
    Reader h(rest());
    const uint32_t type = h.U32();
    const uint32_t reserved = h.U32();
    const uint64_t length = h.U64();
    if (r.end_seen) return Malformed("data after END");
    if (reserved != 0) return Malformed("record reserved field");
    switch (type) {
      case kRecordPages:
        if (length <= 8 || length > 8 + kWindowPages * kPageSize) return Malformed("PAGES length");
        break;
      case kRecordDevice:
        if (r.device_seen) return Malformed("second DEVICE record");
        if (length < kDeviceFixedSize || length > kDeviceFixedSize + 4096) {
          return Malformed("DEVICE length");
        }
        break;
      case kRecordEnd:
        if (!r.device_seen) return Malformed("END before DEVICE");
        if (length != 0) return Malformed("END length");
        break;
      default:
        return Malformed(fmt::format("record type {}", type));
    }
    if (rest().size() - kRecordHeaderSize < length) break;  // Wait for the rest.
    const auto payload = rest().subspan(kRecordHeaderSize, length);
    if (type == kRecordPages) {
      if (r.device_seen) return Malformed("PAGES after DEVICE");
      Reader p(payload);
      const uint64_t offset = p.U64();
      const auto bytes = payload.subspan(8);
      if (offset % kPageSize != 0 || offset >= slice_size ||
          bytes.size() > slice_size - offset) {
        return Malformed("PAGES outside the slice");
      }
      MutexLock exec(exec_mu_);
      UMDEV_TRY(slice_->Write(offset, bytes));
    } else if (type == kRecordDevice) {
      r.device.assign(payload.begin(), payload.end());
      r.device_seen = true;
    } else {
      r.end_seen = true;
    }
    pos += kRecordHeaderSize + length;
  }
  r.in.erase(r.in.begin(), r.in.begin() + static_cast<ptrdiff_t>(pos));
  return {};
}

std::vector<std::byte> GpuDevice::EncodeDeviceState() {
  std::vector<std::byte> out;
  MutexLock lock(mu_);
  Writer w(out);
  w.U64(queue_base_);
  w.U32(queue_size_);
  w.U32(queue_ctrl_);
  w.U32(head_);
  w.U32(TailNow());
  w.U64(fence_done_);
  w.U32(int_status_);
  w.U32(int_mask_);
  w.U32(error_code_);
  w.U32(error_index_);
  w.U32(error_skippable_ ? 1 : 0);
  w.U32(0);
  w.U64(static_cast<uint64_t>(stats_.busy.count()));
  w.U64(stats_.commands);
  w.U64(stats_.bytes);
  w.U64(stats_.errors);
  w.Bytes(msix_table_);
  w.U32(config_.size());
  std::vector<std::byte> config(config_.size());
  (void)config_.Read(0, config);  // In range by construction.
  w.Bytes(config);
  return out;
}

Result<void> GpuDevice::LoadDeviceState(std::span<const std::byte> payload) {
  MutexLock lock(mu_);
  if (payload.size() != kDeviceFixedSize + config_.size()) return Malformed("DEVICE size");
  Reader r(payload);
  const uint64_t queue_base = r.U64();
  const uint32_t queue_size = r.U32();
  const uint32_t queue_ctrl = r.U32();
  const uint32_t head = r.U32();
  const uint32_t tail = r.U32();
  const uint64_t fence_done = r.U64();
  const uint32_t int_status = r.U32();
  const uint32_t int_mask = r.U32();
  const uint32_t error_code = r.U32();
  const uint32_t error_index = r.U32();
  const uint32_t error_skippable = r.U32();
  const uint32_t reserved = r.U32();
  const uint64_t busy = r.U64();
  const uint64_t commands = r.U64();
  const uint64_t bytes = r.U64();
  const uint64_t errors = r.U64();
  const auto msix = r.Take(kMsixTableSize);
  const uint32_t config_size = r.U32();
  const auto config = r.Take(config_.size());
  constexpr uint32_t kCauses = kIntFence | kIntError;
  if (config_size != config_.size()) return Malformed("configuration space size");
  const uint32_t valid_ctrl = kQueueEnable | (doorbell_page_.valid() ? kQueueDoorbellPage : 0);
  if (queue_ctrl != 0 && ((queue_ctrl & kQueueEnable) == 0 || (queue_ctrl & ~valid_ctrl) != 0)) {
    return Malformed("QUEUE_CTRL (a polled tail needs a doorbell page)");
  }
  if (queue_ctrl != 0 && (queue_base % kQueueAlign != 0 || queue_size < kMinQueueSize ||
                          queue_size > kMaxQueueSize || !std::has_single_bit(queue_size))) {
    return Malformed("an enabled queue's base or size");
  }
  if ((int_status & ~kCauses) != 0 || (int_mask & ~kCauses) != 0) {
    return Malformed("interrupt bits");
  }
  if (error_skippable > 1 || reserved != 0 || (error_code == 0 && error_skippable != 0)) {
    return Malformed("error registers");
  }
  if (busy > static_cast<uint64_t>(INT64_MAX)) return Malformed("busy time");

  // Valid: apply. Config goes through the guest-write rules from power-on,
  // which restores every writable field (BARs, Command, MSI-X, PM); Status
  // is skipped, its interrupt bit is recomputed below.
  config_.Reset();
  (void)config_.Write(0, config.first(PCI_STATUS));
  (void)config_.Write(PCI_STATUS + 2, config.subspan(PCI_STATUS + 2));
  std::copy(msix.begin(), msix.end(), msix_table_.begin());
  queue_base_ = queue_base;
  queue_size_ = queue_size;
  queue_ctrl_ = queue_ctrl;
  head_ = head;
  tail_ = tail;
  DropPrefetch();
  if ((queue_ctrl_ & kQueueDoorbellPage) != 0) StoreDoorbellTail(tail);
  fence_done_ = fence_done;
  int_status_ = int_status;
  int_mask_ = int_mask;
  error_code_ = error_code;
  error_index_ = error_index;
  error_skippable_ = error_skippable != 0;
  stats_ = GpuDeviceStats{.busy = std::chrono::nanoseconds(static_cast<int64_t>(busy)),
                          .commands = commands,
                          .bytes = bytes,
                          .errors = errors};
  ++generation_;
  UpdateIntxLine();
  cv_.NotifyAll();
  return {};
}

}  // namespace umdev::vendor::gpu
