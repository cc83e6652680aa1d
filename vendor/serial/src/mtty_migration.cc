// MttyDevice's migration: single arcs of the VFIO migration v2 state machine
// (the core walks the path) and the saving and resuming streams.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "mtty_device.h"
#include "umdev/vendor/serial/migration_stream.h"

namespace umdev::vendor::serial {
namespace {

using State = vfio_device_mig_state;

bool Is(State from, State to, State a, State b) { return from == a && to == b; }

}  // namespace

uint64_t MttyDevice::flags() const {
  return VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | kMigrationPreCopy;
}

vfio_device_mig_state MttyDevice::GetState() {
  MutexLock lock(mu_);
  return mig_state_;
}

Result<uint64_t> MttyDevice::GetDataSize() { return StreamSize(num_ports_); }

void MttyDevice::DropMigrationLocked() {
  saving_.clear();
  saving_pos_ = 0;
  has_saving_ = false;
  resuming_.clear();
  has_resuming_ = false;
}

Result<void> MttyDevice::SetState(vfio_device_mig_state next) {
  MutexLock lock(mu_);
  const State cur = mig_state_;
  if (next == cur) return {};
  // Arcs with nothing to do: the device does no DMA, so the P2P states are
  // the states they pair with; stopping only freezes the far-end I/O.
  if (Is(cur, next, VFIO_DEVICE_STATE_RUNNING, VFIO_DEVICE_STATE_RUNNING_P2P) ||
      Is(cur, next, VFIO_DEVICE_STATE_RUNNING_P2P, VFIO_DEVICE_STATE_RUNNING) ||
      Is(cur, next, VFIO_DEVICE_STATE_RUNNING_P2P, VFIO_DEVICE_STATE_STOP) ||
      Is(cur, next, VFIO_DEVICE_STATE_STOP, VFIO_DEVICE_STATE_RUNNING_P2P) ||
      Is(cur, next, kStatePreCopy, kStatePreCopyP2P) ||
      Is(cur, next, kStatePreCopyP2P, kStatePreCopy)) {
    mig_state_ = next;
    // Running again: bytes held while stopped move now, and a pending
    // interrupt is delivered afresh.
    if (LineRunningLocked()) SettleLocked();
    KickLocked();
    return {};
  }
  // Arcs that end a stream.
  if (Is(cur, next, kStatePreCopy, VFIO_DEVICE_STATE_RUNNING) ||
      Is(cur, next, kStatePreCopyP2P, VFIO_DEVICE_STATE_RUNNING_P2P) ||
      Is(cur, next, VFIO_DEVICE_STATE_STOP_COPY, VFIO_DEVICE_STATE_STOP)) {
    DropMigrationLocked();
    mig_state_ = next;
    return {};
  }
  if (Is(cur, next, VFIO_DEVICE_STATE_RESUMING, VFIO_DEVICE_STATE_STOP)) {
    if (auto loaded = LoadStreamLocked(); !loaded.has_value()) {
      DropMigrationLocked();
      mig_state_ = VFIO_DEVICE_STATE_ERROR;
      return loaded;
    }
    DropMigrationLocked();
    mig_state_ = next;
    return {};
  }
  // Arcs that open a stream. Pre-copy sends the header early; the port
  // records follow once the device has stopped.
  if (Is(cur, next, VFIO_DEVICE_STATE_RUNNING, kStatePreCopy) ||
      Is(cur, next, VFIO_DEVICE_STATE_RUNNING_P2P, kStatePreCopyP2P)) {
    DropMigrationLocked();
    saving_ = EncodeStreamHeader(num_ports_);
    has_saving_ = true;
    mig_state_ = next;
    return {};
  }
  if (Is(cur, next, VFIO_DEVICE_STATE_STOP, VFIO_DEVICE_STATE_STOP_COPY) ||
      Is(cur, next, kStatePreCopyP2P, VFIO_DEVICE_STATE_STOP_COPY)) {
    if (!has_saving_) {
      saving_ = EncodeStreamHeader(num_ports_);
      saving_pos_ = 0;
      has_saving_ = true;
    }
    std::vector<PortSnapshot> snapshots;
    for (const Port& port : ports_) {
      snapshots.push_back(PortSnapshot{.uart = port.uart.state(), .far_end = far_end_.kind});
    }
    const std::vector<std::byte> records = EncodePorts(snapshots);
    saving_.insert(saving_.end(), records.begin(), records.end());
    mig_state_ = next;
    return {};
  }
  if (Is(cur, next, VFIO_DEVICE_STATE_STOP, VFIO_DEVICE_STATE_RESUMING)) {
    DropMigrationLocked();
    has_resuming_ = true;
    mig_state_ = next;
    return {};
  }
  // Not a single arc (the core never asks for one), or out of ERROR, which
  // only a reset leaves. Nothing changed.
  return Fail(EINVAL, fmt::format("mtty: no migration arc from state {} to {}",
                                  static_cast<int>(cur), static_cast<int>(next)));
}

Result<size_t> MttyDevice::ReadData(std::span<std::byte> out) {
  MutexLock lock(mu_);
  if (!has_saving_) return Fail(EINVAL, "mtty: no saving migration stream");
  const size_t n = std::min(out.size(), saving_.size() - saving_pos_);
  std::memcpy(out.data(), saving_.data() + saving_pos_, n);
  saving_pos_ += n;
  return n;
}

Result<size_t> MttyDevice::WriteData(std::span<const std::byte> data) {
  MutexLock lock(mu_);
  if (!has_resuming_) return Fail(EINVAL, "mtty: no resuming migration stream");
  const size_t before = resuming_.size();
  if (data.size() > StreamSize(num_ports_) - before) {
    return Fail(ENOMEM, fmt::format("mtty: migration data beyond the {}-byte stream",
                                    StreamSize(num_ports_)));
  }
  resuming_.insert(resuming_.end(), data.begin(), data.end());
  // The header is checked once it is complete, as the kernel sample does.
  if (before < kStreamHeaderSize && resuming_.size() >= kStreamHeaderSize) {
    if (auto valid = ValidateStreamHeader(resuming_, num_ports_); !valid.has_value()) {
      resuming_.resize(before);
      return std::unexpected(valid.error());
    }
  }
  return data.size();
}

Result<void> MttyDevice::LoadStreamLocked() {
  const std::vector<FarEndKind> far_ends(num_ports_, far_end_.kind);
  UMDEV_ASSIGN_OR_RETURN(const std::vector<PortSnapshot> snapshots,
                         DecodeStream(resuming_, far_ends));
  for (unsigned port = 0; port < num_ports_; ++port) {
    Uart16550& uart = ports_[port].uart;
    uart.Restore(snapshots[port].uart);
    // This side's far end drives the modem inputs from now on; a difference
    // (a socket with no client yet) is a modem-status change for the guest.
    uart.SetModemInputs(ModemInputsLocked(port));
  }
  // Treat the line as low so that, once running, a pending interrupt is
  // signalled afresh: a duplicate is harmless, a lost one stalls the guest.
  line_high_ = false;
  return {};
}

Result<PrecopyInfo> MttyDevice::GetPrecopyInfo() {
  MutexLock lock(mu_);
  if (!has_saving_) return Fail(EINVAL, "mtty: pre-copy info without a saving stream");
  return PrecopyInfo{.initial_bytes = saving_.size() - saving_pos_, .dirty_bytes = 0};
}

}  // namespace umdev::vendor::serial
