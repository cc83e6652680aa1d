// PciTestDevice: the migration state machine and its versioned state stream.
#include <linux/pci_regs.h>

#include <cstring>

#include <fmt/format.h>

#include "fakes/pci_test_device.h"

namespace umdev::testing {
namespace {

using namespace pci_test;  // NOLINT: the register map is this file's vocabulary.

constexpr size_t kRegisterWords = 9;
constexpr size_t kFixedStreamSize =
    3 * 4 + kRegisterWords * 4 + kBufferSize + kBar1Size + kConfigSize + 4;

bool IsArc(vfio_device_mig_state from, vfio_device_mig_state to) {
  switch (from) {
    case VFIO_DEVICE_STATE_RUNNING:
      return to == VFIO_DEVICE_STATE_STOP;
    case VFIO_DEVICE_STATE_STOP:
      return to == VFIO_DEVICE_STATE_RUNNING || to == VFIO_DEVICE_STATE_STOP_COPY ||
             to == VFIO_DEVICE_STATE_RESUMING;
    case VFIO_DEVICE_STATE_STOP_COPY:
    case VFIO_DEVICE_STATE_RESUMING:
      return to == VFIO_DEVICE_STATE_STOP;
    default:
      return false;
  }
}

class Writer {
 public:
  explicit Writer(std::vector<std::byte>& out) : out_(out) {}
  void U32(uint32_t value) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<std::byte>(value >> (8 * i)));
  }
  void Bytes(std::span<const std::byte> bytes) { out_.insert(out_.end(), bytes.begin(), bytes.end()); }

 private:
  std::vector<std::byte>& out_;
};

// Bounds-checked reads; |ok()| turns false at the first short read.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  uint32_t U32() {
    std::span<const std::byte> b = Take(4);
    uint32_t value = 0;
    for (size_t i = 0; i < b.size(); ++i) value |= static_cast<uint32_t>(b[i]) << (8 * i);
    return value;
  }
  std::span<const std::byte> Take(size_t n) {
    if (!ok_ || n > in_.size() - pos_) {
      ok_ = false;
      return {};
    }
    std::span<const std::byte> b = in_.subspan(pos_, n);
    pos_ += n;
    return b;
  }
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == in_.size(); }

 private:
  std::span<const std::byte> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace

size_t PciTestDevice::StreamSize() const {
  return kFixedStreamSize + (type_ == Type::kMmap ? kBar3Size : 0);
}

vfio_device_mig_state PciTestDevice::GetState() {
  MutexLock lock(mu_);
  return mig_state_;
}

Result<void> PciTestDevice::SetState(vfio_device_mig_state next) {
  MutexLock lock(mu_);
  const vfio_device_mig_state current = mig_state_;
  if (!IsArc(current, next)) {
    return Fail(EINVAL, fmt::format("test_pci: no migration arc {} -> {}",
                                    static_cast<int>(current), static_cast<int>(next)));
  }
  if (current == VFIO_DEVICE_STATE_STOP && next == VFIO_DEVICE_STATE_STOP_COPY) {
    mig_out_ = SaveState();
    mig_out_pos_ = 0;
  } else if (current == VFIO_DEVICE_STATE_STOP_COPY) {
    mig_out_.clear();
    mig_out_pos_ = 0;
  } else if (next == VFIO_DEVICE_STATE_RESUMING) {
    mig_in_.clear();
  } else if (current == VFIO_DEVICE_STATE_RESUMING) {
    std::vector<std::byte> stream = std::move(mig_in_);
    mig_in_.clear();
    if (auto loaded = LoadState(stream); !loaded.has_value()) {
      mig_state_ = VFIO_DEVICE_STATE_ERROR;
      return loaded;
    }
  }
  mig_state_ = next;
  cv_.NotifyAll();  // The worker runs transfers again once RUNNING.
  return {};
}

Result<uint64_t> PciTestDevice::GetDataSize() { return StreamSize(); }

Result<size_t> PciTestDevice::ReadData(std::span<std::byte> out) {
  MutexLock lock(mu_);
  if (mig_state_ != VFIO_DEVICE_STATE_STOP_COPY) {
    return Fail(EINVAL, "test_pci: migration data is read in STOP_COPY only");
  }
  const size_t n = std::min(out.size(), mig_out_.size() - mig_out_pos_);
  std::memcpy(out.data(), mig_out_.data() + mig_out_pos_, n);
  mig_out_pos_ += n;
  return n;
}

Result<size_t> PciTestDevice::WriteData(std::span<const std::byte> data) {
  MutexLock lock(mu_);
  if (mig_state_ != VFIO_DEVICE_STATE_RESUMING) {
    return Fail(EINVAL, "test_pci: migration data is written in RESUMING only");
  }
  if (data.size() > StreamSize() - std::min(StreamSize(), mig_in_.size())) {
    return Fail(EINVAL, fmt::format("test_pci: migration stream longer than {} bytes",
                                    StreamSize()));
  }
  mig_in_.insert(mig_in_.end(), data.begin(), data.end());
  return data.size();
}

std::vector<std::byte> PciTestDevice::SaveState() const {
  std::vector<std::byte> out;
  out.reserve(StreamSize());
  Writer w(out);
  w.U32(kMigrationMagic);
  w.U32(kMigrationVersion);
  w.U32(type_ == Type::kMmap ? 1 : 0);
  for (uint32_t value : {scratch_, irq_status_, dma_addr_lo_, dma_addr_hi_, dma_len_, dma_cmd_,
                         dma_status_, dma_error_, dma_count_}) {
    w.U32(value);
  }
  w.Bytes(buffer_);
  w.Bytes(bar1_);
  std::vector<std::byte> config(kConfigSize);
  (void)config_.Read(0, config);  // In range by construction.
  w.Bytes(config);
  if (bar3_.valid()) {
    w.U32(static_cast<uint32_t>(kBar3Size));
    w.Bytes(bar3_.bytes());
  } else {
    w.U32(0);
  }
  return out;
}

Result<void> PciTestDevice::LoadState(std::span<const std::byte> stream) {
  const auto malformed = [](std::string_view why) {
    return Fail(EINVAL, fmt::format("test_pci: malformed migration stream: {}", why));
  };
  Reader r(stream);
  if (r.U32() != kMigrationMagic) return malformed("bad magic");
  if (r.U32() != kMigrationVersion) return malformed("unknown version");
  if (r.U32() != (type_ == Type::kMmap ? 1u : 0u)) return malformed("another device type");
  uint32_t regs[kRegisterWords];
  for (uint32_t& value : regs) value = r.U32();
  std::span<const std::byte> buffer = r.Take(kBufferSize);
  std::span<const std::byte> bar1 = r.Take(kBar1Size);
  std::span<const std::byte> config = r.Take(kConfigSize);
  const uint32_t bar3_len = r.U32();
  const uint32_t expected_bar3 = type_ == Type::kMmap ? static_cast<uint32_t>(kBar3Size) : 0;
  if (!r.ok()) return malformed("truncated");
  if (bar3_len != expected_bar3) return malformed("BAR3 length");
  std::span<const std::byte> bar3 = r.Take(bar3_len);
  if (!r.ok()) return malformed("truncated BAR3");
  if (!r.at_end()) return malformed("trailing bytes");
  if (regs[6] > kDmaStatusError) return malformed("DMA status");

  // Valid: apply. Config goes through the guest-write rules from power-on,
  // which restores every writable field (BARs, Command, MSI/MSI-X, PM).
  // Status is skipped: its device-driven bits are recomputed below.
  config_.Reset();
  (void)config_.Write(0, config.first(PCI_STATUS));
  (void)config_.Write(PCI_STATUS + 2, config.subspan(PCI_STATUS + 2));
  scratch_ = regs[0];
  irq_status_ = regs[1];
  dma_addr_lo_ = regs[2];
  dma_addr_hi_ = regs[3];
  dma_len_ = regs[4];
  dma_cmd_ = regs[5];
  dma_status_ = regs[6];
  dma_error_ = regs[7];
  dma_count_ = regs[8];
  std::memcpy(buffer_.data(), buffer.data(), buffer.size());
  std::memcpy(bar1_.data(), bar1.data(), bar1.size());
  if (bar3_.valid()) std::memcpy(bar3_.data(), bar3.data(), bar3.size());
  ++generation_;
  queued_.reset();
  // A transfer the source had in flight runs again here (both directions
  // are idempotent); it starts once the device is RUNNING.
  if (dma_status_ == kDmaStatusBusy) QueueDma();
  UpdateIntxLine();
  return {};
}

}  // namespace umdev::testing
