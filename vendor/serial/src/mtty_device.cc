// MttyDevice: the PCI function, its BARs and interrupts, far ends and attributes.
#include "mtty_device.h"

#include <linux/pci_regs.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace umdev::vendor::serial {
namespace {

constexpr uint64_t kBarSize = 8;
constexpr uint32_t kIntx = VFIO_PCI_INTX_IRQ_INDEX;
constexpr uint32_t kMsi = VFIO_PCI_MSI_IRQ_INDEX;

// The kernel sample's identity (samples/vfio-mdev/mtty.c): a 16550-compatible
// serial controller that Linux's 8250_pci binds by class.
PciConfigSpace BuildConfigSpace(unsigned ports) {
  PciConfigSpace config(PciHeaderSpec{.vendor_id = 0x4348,
                                      .device_id = 0x3253,
                                      .subsystem_vendor_id = 0x4348,
                                      .subsystem_id = 0x3253,
                                      .revision_id = 0x10,
                                      .base_class = 0x07,
                                      .sub_class = 0x00,
                                      .prog_if = 0x02,
                                      .multifunction = false},
                        PciInterruptPin::kIntA);
  for (unsigned port = 0; port < ports; ++port) {
    // Static layout: these cannot fail for indices 0-1 and an 8-byte I/O BAR.
    (void)config.DefineBar(port, PciBarSpec{.type = PciBarType::kIo, .size = kBarSize,
                                            .prefetchable = false});
  }
  (void)config.AddMsi(PciMsiSpec{.vectors = 1, .address_64bit = true,
                                 .per_vector_masking = false});
  return config;
}

std::string Join(const std::vector<LineEnd>& ends) {
  std::string out;
  for (const LineEnd& end : ends) {
    if (!out.empty()) out += ' ';
    out += end.path();
  }
  return out;
}

}  // namespace

MttyDevice::MttyDevice(unsigned ports, std::shared_ptr<irq::VirqfdLoop> resample_loop,
                       std::function<void()> on_destroy)
    : num_ports_(ports),
      resample_loop_(std::move(resample_loop)),
      on_destroy_(std::move(on_destroy)),
      irqs_(irq::IrqCounts{.intx = 1, .msi = 1, .msix = 0, .err = 0, .req = 0},
            resample_loop_.get()),
      config_(BuildConfigSpace(ports)),
      ports_(ports) {
  MutexLock lock(mu_);
  for (unsigned port = 0; port < num_ports_; ++port) {
    ports_[port].uart.SetModemInputs(ModemInputsLocked(port));
    // Connecting the cable is not a modem-status event the guest should see.
    ports_[port].uart.Read(reg::kMsr);
  }
  config_.SetObservers(PciConfigObservers{
      // Hooks run inside config_.Write(), which holds mu_.
      .command_changed = [this](uint16_t old_command,
                                uint16_t new_command) { OnCommandChanged(old_command, new_command); },
      .bar_changed = {},
      .msi_changed = {},
      .msix_changed = {},
      .power_state_changed = {}});
}

MttyDevice::~MttyDevice() {
  {
    MutexLock attr(attr_mu_);
    {
      MutexLock lock(mu_);
      line_wake_fd_ = -1;
    }
    line_thread_.reset();
  }
  irq::Virqfd resample;
  {
    MutexLock lock(mu_);
    resample = std::move(resample_);
  }
  resample.Disable();
  if (on_destroy_) on_destroy_();
}

Result<void> MttyDevice::Open(const OpenContext& /*context*/) {
  MutexLock attr(attr_mu_);  // Waits for a far-end change in progress.
  MutexLock lock(mu_);
  open_ = true;
  return {};
}

void MttyDevice::Close() {
  irq::Virqfd resample;  // Disabled after mu_ is released: OnResample takes it.
  {
    MutexLock lock(mu_);
    open_ = false;
    irqs_.DisableAll();
    resample = std::move(resample_);
    DropMigrationLocked();
    // The next user finds a running device (as vfio-pci drivers do at close).
    mig_state_ = VFIO_DEVICE_STATE_RUNNING;
    KickLocked();
  }
}

DeviceInfo MttyDevice::GetInfo() {
  return DeviceInfo{.flags = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET,
                    .num_regions = VFIO_PCI_NUM_REGIONS,
                    .num_irqs = VFIO_PCI_NUM_IRQS};
}

Result<RegionInfo> MttyDevice::GetRegionInfo(uint32_t index) {
  if (index >= VFIO_PCI_NUM_REGIONS) return Fail(EINVAL, fmt::format("no region {}", index));
  RegionInfo info;
  constexpr uint32_t kReadWrite = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
  if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
    MutexLock lock(mu_);
    info.flags = kReadWrite;
    info.size = config_.size();
  } else if (index < num_ports_) {
    info.flags = kReadWrite;
    info.size = kBarSize;
  }
  return info;  // Other BARs, the ROM and VGA: size 0, as the kernel sample.
}

Result<size_t> MttyDevice::RegionRead(uint32_t index, uint64_t offset, std::span<std::byte> out) {
  if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
    MutexLock lock(mu_);
    UMDEV_TRY(config_.Read(offset, out));
    return out.size();
  }
  if (index >= num_ports_) return Fail(EINVAL, fmt::format("read: region {} has no data", index));
  return BarAccess(index, offset, out, /*write=*/false);
}

Result<size_t> MttyDevice::RegionWrite(uint32_t index, uint64_t offset,
                                       std::span<const std::byte> data) {
  if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
    MutexLock lock(mu_);
    UMDEV_TRY(config_.Write(offset, data));
    return data.size();
  }
  if (index >= num_ports_) return Fail(EINVAL, fmt::format("write: region {} has no data", index));
  std::vector<std::byte> bytes(data.begin(), data.end());
  return BarAccess(index, offset, bytes, /*write=*/true);
}

Result<size_t> MttyDevice::BarAccess(unsigned port, uint64_t offset, std::span<std::byte> bytes,
                                     bool write) {
  if (bytes.empty() || offset >= kBarSize || bytes.size() > kBarSize - offset) {
    return Fail(EINVAL, fmt::format("BAR{}: access of {} bytes at {:#x} leaves the 8 registers",
                                    port, bytes.size(), offset));
  }
  MutexLock lock(mu_);
  const std::vector<bool> before = LineStateLocked();
  Uart16550& uart = ports_[port].uart;
  // Each byte is one register access, in address order.
  for (size_t i = 0; i < bytes.size(); ++i) {
    const auto reg = static_cast<uint8_t>(offset + i);
    if (write) {
      uart.Write(reg, std::to_integer<uint8_t>(bytes[i]));
    } else {
      bytes[i] = std::byte{uart.Read(reg)};
    }
    SettleLocked();
  }
  if (LineStateLocked() != before) KickLocked();
  return bytes.size();
}

bool MttyDevice::LineRunningLocked() const {
  // Stopped states freeze the device: no bytes move to or from the host.
  return mig_state_ == VFIO_DEVICE_STATE_RUNNING || mig_state_ == VFIO_DEVICE_STATE_RUNNING_P2P ||
         mig_state_ == kStatePreCopy ||
         mig_state_ == kStatePreCopyP2P;
}

void MttyDevice::SettleLocked() {
  for (unsigned port = 0; port < num_ports_; ++port) PumpLocked(port);
  UpdateInterruptLocked();
}

void MttyDevice::PumpLocked(unsigned port) {
  Uart16550& uart = ports_[port].uart;
  if (uart.PendingTx() == 0) return;
  if (far_end_.kind == FarEndKind::kLoopback) {
    // The kernel sample's behaviour: a loopback plug on the line. A full
    // receiver overruns, as it would on the wire.
    while (auto byte = uart.TakeTx()) uart.Receive(*byte);
    uart.LineIdle();
    return;
  }
  if (!LineRunningLocked() || port >= ends_.size()) return;
  LineEnd& end = ends_[port];
  if (!end.connected()) {
    // A socket with no client: the line is open, so bytes go nowhere (DCD
    // tells the guest).
    while (uart.TakeTx()) {
    }
    return;
  }
  uint8_t buffer[ByteFifo::kCapacity];
  const size_t pending = uart.PendingTx();
  for (size_t i = 0; i < pending; ++i) buffer[i] = uart.state().tx.At(i);
  const ssize_t written = ::write(end.data_fd(), buffer, pending);
  if (written < 0) {
    if (errno == EAGAIN || errno == EINTR) return;  // The line thread waits for room.
    if (far_end_.kind == FarEndKind::kSocket) {
      spdlog::info("mtty: client on {} went away: {}", end.path(), strerror(errno));
      end.Disconnect();
      uart.SetModemInputs(ModemInputsLocked(port));
    }
    return;
  }
  for (ssize_t i = 0; i < written; ++i) uart.TakeTx();
}

void MttyDevice::UpdateInterruptLocked() {
  bool high = false;
  for (const Port& port : ports_) high = high || port.uart.InterruptPending();
  config_.UpdateStatus(PCI_STATUS_INTERRUPT, high);
  const bool rising = high && !line_high_;
  line_high_ = high;
  if (!rising) return;
  ReassertIntxLocked();
  irqs_.Trigger(kMsi, 0);  // Dropped unless MSI is the enabled mode.
}

void MttyDevice::ReassertIntxLocked() {
  // Masked: nothing is recorded; the unmask re-evaluates the level instead,
  // so an interrupt the guest already serviced is not delivered twice.
  if (!line_high_ || (config_.command() & PCI_COMMAND_INTX_DISABLE) != 0) return;
  if (irqs_.IsMasked(kIntx, 0)) return;
  irqs_.Trigger(kIntx, 0);
}

void MttyDevice::OnCommandChanged(uint16_t old_command, uint16_t new_command) {
  if ((old_command & PCI_COMMAND_INTX_DISABLE) != 0 &&
      (new_command & PCI_COMMAND_INTX_DISABLE) == 0) {
    ReassertIntxLocked();
  }
}

void MttyDevice::OnResample() {
  MutexLock lock(mu_);
  irqs_.UnmaskIntx();
  ReassertIntxLocked();
}

Result<IrqInfo> MttyDevice::GetIrqInfo(uint32_t index) {
  if (index >= VFIO_PCI_NUM_IRQS) return Fail(EINVAL, fmt::format("no IRQ index {}", index));
  return irqs_.Info(index);
}

Result<void> MttyDevice::SetIrqs(IrqSet& set) {
  irq::Virqfd dropped;  // Destroyed after mu_ is released: it waits for OnResample.
  MutexLock lock(mu_);
  const uint32_t action = set.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
  const uint32_t data = set.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
  if (set.index == kIntx && action == VFIO_IRQ_SET_ACTION_UNMASK &&
      data == VFIO_IRQ_SET_DATA_EVENTFD) {
    // DeviceIrqs would watch the resample eventfd and only unmask; this
    // device must also re-signal a line that is still high, so it watches it.
    // A no-op unmask first gets DeviceIrqs's answer to "is INTx enabled?".
    IrqSet probe{.flags = VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_DATA_BOOL,
                 .index = kIntx, .start = 0, .count = 1, .bools = {0}, .fds = {}};
    UMDEV_TRY(irqs_.SetIrqs(probe));
    dropped = std::move(resample_);
    if (!set.fds[0]) return {};
    UMDEV_ASSIGN_OR_RETURN(resample_,
                           resample_loop_->Watch(std::move(set.fds[0]), [this] { OnResample(); }));
    return {};
  }
  const bool intx_off = set.index == kIntx && action == VFIO_IRQ_SET_ACTION_TRIGGER &&
                        ((data == VFIO_IRQ_SET_DATA_NONE && set.count == 0) ||
                         (data == VFIO_IRQ_SET_DATA_EVENTFD && !set.fds[0]));
  const bool intx_on = set.index == kIntx && action == VFIO_IRQ_SET_ACTION_TRIGGER &&
                       data == VFIO_IRQ_SET_DATA_EVENTFD && set.fds[0];
  UMDEV_TRY(irqs_.SetIrqs(set));
  if (intx_off) dropped = std::move(resample_);  // vfio-pci drops it with INTx.
  // INTx is level-triggered: a line already high when INTx is enabled or
  // unmasked is delivered now (QEMU unmasks with DATA_NONE at the guest's EOI).
  if (intx_on || (set.index == kIntx && action == VFIO_IRQ_SET_ACTION_UNMASK)) {
    ReassertIntxLocked();
  }
  return {};
}

Result<void> MttyDevice::Reset() {
  MutexLock lock(mu_);
  for (unsigned port = 0; port < num_ports_; ++port) {
    Uart16550& uart = ports_[port].uart;
    uart.Reset();
    uart.SetModemInputs(ModemInputsLocked(port));
    uart.Read(reg::kMsr);  // Power-on MSR has no deltas.
  }
  config_.Reset();
  DropMigrationLocked();
  mig_state_ = VFIO_DEVICE_STATE_RUNNING;
  line_high_ = false;
  SettleLocked();
  KickLocked();
  return {};
}

uint8_t MttyDevice::ModemInputsLocked(unsigned port) const {
  // The far end is always ready (CTS, DSR); carrier (DCD) is a connected
  // client for a socket, always present otherwise.
  uint8_t lines = msr::kCts | msr::kDsr | msr::kDcd;
  if (far_end_.kind == FarEndKind::kSocket && (port >= ends_.size() || !ends_[port].connected())) {
    lines &= static_cast<uint8_t>(~msr::kDcd);
  }
  return lines;
}

// --- The line thread ------------------------------------------------------

std::vector<bool> MttyDevice::LineStateLocked() const {
  std::vector<bool> state;
  for (const Port& port : ports_) {
    state.push_back(port.uart.AcceptsInput());
    state.push_back(port.uart.PendingTx() > 0);
  }
  return state;
}

void MttyDevice::KickLocked() {
  if (line_wake_fd_ < 0) return;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(line_wake_fd_, &one, sizeof(one));
}

std::vector<pollfd> MttyDevice::LineInterest() {
  MutexLock lock(mu_);
  std::vector<pollfd> fds;
  if (!LineRunningLocked()) return fds;
  for (unsigned port = 0; port < ends_.size(); ++port) {
    const LineEnd& end = ends_[port];
    const Uart16550& uart = ports_[port].uart;
    if (end.listener_fd() >= 0) {
      fds.push_back(pollfd{.fd = end.listener_fd(), .events = POLLIN, .revents = 0});
    }
    // Input is read only while the receiver has room: the rest waits in the
    // kernel's buffer (back-pressure on the writer) instead of overrunning.
    short events = 0;
    if (uart.AcceptsInput()) events |= POLLIN;
    if (uart.PendingTx() > 0) events |= POLLOUT;
    // Left out when there is nothing to wait for: poll() reports a hangup
    // regardless of events, which would spin while the receiver is full.
    if (end.connected() && events != 0) {
      fds.push_back(pollfd{.fd = end.data_fd(), .events = events, .revents = 0});
    }
  }
  return fds;
}

void MttyDevice::ServeLines(const std::vector<pollfd>& fds) {
  MutexLock lock(mu_);
  if (!LineRunningLocked()) return;
  for (const pollfd& polled : fds) {
    if (polled.revents == 0) continue;
    for (unsigned port = 0; port < ends_.size(); ++port) {
      LineEnd& end = ends_[port];
      if (polled.fd == end.listener_fd()) {
        if (end.Accept()) ports_[port].uart.SetModemInputs(ModemInputsLocked(port));
      } else if (polled.fd == end.data_fd()) {
        if ((polled.revents & (POLLIN | POLLHUP | POLLERR)) != 0) ReadLineLocked(port);
        if ((polled.revents & POLLOUT) != 0) PumpLocked(port);
      }
    }
  }
  SettleLocked();
}

void MttyDevice::ReadLineLocked(unsigned port) {
  LineEnd& end = ends_[port];
  Uart16550& uart = ports_[port].uart;
  const size_t room = uart.InputRoom();
  if (room == 0 || !end.connected()) return;
  uint8_t buffer[ByteFifo::kCapacity];
  const ssize_t n = ::read(end.data_fd(), buffer, room);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    if (far_end_.kind == FarEndKind::kSocket) {
      end.Disconnect();
      uart.SetModemInputs(ModemInputsLocked(port));
    } else {
      spdlog::warn("mtty: reading {} failed: {}", end.path(), n == 0 ? "EOF" : strerror(errno));
    }
    return;
  }
  for (ssize_t i = 0; i < n; ++i) uart.Receive(buffer[i]);
  // Fewer bytes than asked for: nothing more is waiting, the line is idle.
  if (static_cast<size_t>(n) < room) uart.LineIdle();
}

// --- Attributes -----------------------------------------------------------

std::vector<DeviceAttribute> MttyDevice::Attributes() {
  return {DeviceAttribute{.name = "far_end", .readable = true, .writable = true},
          DeviceAttribute{.name = "pty", .readable = true, .writable = false}};
}

Result<std::string> MttyDevice::ReadAttribute(std::string_view name) {
  MutexLock lock(mu_);
  if (name == "far_end") return far_end_.ToString();
  if (name == "pty") return far_end_.kind == FarEndKind::kPty ? Join(ends_) : std::string();
  return Fail(ENOENT, fmt::format("mtty has no attribute '{}'", name));
}

Result<void> MttyDevice::WriteAttribute(std::string_view name, std::string_view value) {
  if (name == "pty") return Fail(EACCES, "mtty: 'pty' is read-only");
  if (name != "far_end") return Fail(ENOENT, fmt::format("mtty has no attribute '{}'", name));
  UMDEV_ASSIGN_OR_RETURN(const FarEndSpec spec, FarEndSpec::Parse(value));
  return ChangeFarEnd(spec);
}

Result<void> MttyDevice::ChangeFarEnd(const FarEndSpec& spec) {
  MutexLock attr(attr_mu_);
  {
    MutexLock lock(mu_);
    if (open_) return Fail(EBUSY, "mtty: far_end cannot change while the device is open");
    if (spec == far_end_) return {};
  }
  // The new ends open first, so a failure leaves the old far end working.
  UMDEV_ASSIGN_OR_RETURN(std::vector<LineEnd> fresh, OpenLineEnds(spec, num_ports_));
  {
    MutexLock lock(mu_);
    line_wake_fd_ = -1;
  }
  line_thread_.reset();  // Joins; the thread takes mu_, which is free here.
  std::vector<LineEnd> old;
  {
    MutexLock lock(mu_);
    old = std::move(ends_);
    ends_ = std::move(fresh);
    far_end_ = spec;
    for (unsigned port = 0; port < num_ports_; ++port) {
      ports_[port].uart.SetModemInputs(ModemInputsLocked(port));
    }
    SettleLocked();
  }
  old.clear();  // Closes the old ptys and removes the old sockets.
  if (spec.kind == FarEndKind::kLoopback) return {};
  auto started = LineThread::Start([this] { return LineInterest(); },
                                   [this](const std::vector<pollfd>& fds) { ServeLines(fds); });
  MutexLock lock(mu_);
  if (!started.has_value()) {
    ends_.clear();
    far_end_ = FarEndSpec{};
    return std::unexpected(Wrap(started.error(), "mtty: far_end line thread"));
  }
  line_thread_ = std::move(*started);
  line_wake_fd_ = line_thread_->wake_fd();
  return {};
}

}  // namespace umdev::vendor::serial
