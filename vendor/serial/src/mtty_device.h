// MttyDevice: one mtty instance — a PCI 16550 serial card with one or two
// ports, its far ends, interrupts and migration.
#pragma once

#include <linux/vfio.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "line_ends.h"
#include "mig_states.h"
#include "umdev/common/mutex.h"
#include "umdev/irq/device_irqs.h"
#include "umdev/irq/virqfd.h"
#include "umdev/mdev_core/device_ops.h"
#include "umdev/mdev_core/pci_config_space.h"
#include "umdev/vendor/serial/far_end.h"
#include "umdev/vendor/serial/uart_16550.h"

namespace umdev::vendor::serial {

// Thread-safe: the transport, the sysfs/control threads, the resample loop
// and the device's line thread all call in; one mutex (mu_) serialises the
// UARTs, config space, interrupt level and migration state. attr_mu_ orders
// far-end changes against opens and is taken before mu_.
class MttyDevice final : public DeviceOps, public MigrationOps {
 public:
  // |ports| is 1 or 2. |resample_loop| serves INTx unmask eventfds and must
  // outlive the device (the parent shares it). |on_destroy| runs last.
  MttyDevice(unsigned ports, std::shared_ptr<irq::VirqfdLoop> resample_loop,
             std::function<void()> on_destroy);
  ~MttyDevice() override;

  // DeviceOps.
  Result<void> Open(const OpenContext& context) override;
  void Close() override;
  DeviceInfo GetInfo() override;
  Result<RegionInfo> GetRegionInfo(uint32_t index) override;
  Result<size_t> RegionRead(uint32_t index, uint64_t offset, std::span<std::byte> out) override;
  Result<size_t> RegionWrite(uint32_t index, uint64_t offset,
                             std::span<const std::byte> data) override;
  Result<IrqInfo> GetIrqInfo(uint32_t index) override;
  Result<void> SetIrqs(IrqSet& set) override;
  Result<void> Reset() override;
  std::vector<DeviceAttribute> Attributes() override;
  Result<std::string> ReadAttribute(std::string_view name) override;
  Result<void> WriteAttribute(std::string_view name, std::string_view value) override;
  MigrationOps* migration() override { return this; }

  // MigrationOps (mtty_migration.cc).
  uint64_t flags() const override;
  vfio_device_mig_state GetState() override;
  Result<void> SetState(vfio_device_mig_state next) override;
  Result<uint64_t> GetDataSize() override;
  Result<size_t> ReadData(std::span<std::byte> out) override;
  // The kernel sample's answer: what is left of the saving file, nothing dirty.
  Result<PrecopyInfo> GetPrecopyInfo() override;
  Result<size_t> WriteData(std::span<const std::byte> data) override;

 private:
  struct Port {
    Uart16550 uart;
  };

  Result<size_t> BarAccess(unsigned port, uint64_t offset, std::span<std::byte> bytes,
                           bool write) UMDEV_EXCLUDES(mu_);
  // After any change to a UART: moves bytes to and from loopback and
  // writable far ends, then re-evaluates the interrupt line.
  void SettleLocked() UMDEV_REQUIRES(mu_);
  void PumpLocked(unsigned port) UMDEV_REQUIRES(mu_);
  // Drives INTx/MSI from the UARTs' combined interrupt output: a rising edge
  // signals; INTx is re-signalled at unmask while the line is still high.
  void UpdateInterruptLocked() UMDEV_REQUIRES(mu_);
  void ReassertIntxLocked() UMDEV_REQUIRES(mu_);
  void OnResample() UMDEV_EXCLUDES(mu_);
  void OnCommandChanged(uint16_t old_command, uint16_t new_command) UMDEV_REQUIRES(mu_);
  // Far-end modem inputs for |port| as the current far end drives them.
  uint8_t ModemInputsLocked(unsigned port) const UMDEV_REQUIRES(mu_);
  bool LineRunningLocked() const UMDEV_REQUIRES(mu_);
  // The line thread's callbacks: what to wait for, and what came.
  std::vector<pollfd> LineInterest() UMDEV_EXCLUDES(mu_);
  void ServeLines(const std::vector<pollfd>& fds) UMDEV_EXCLUDES(mu_);
  void ReadLineLocked(unsigned port) UMDEV_REQUIRES(mu_);
  // Whether the line thread's poll set may have changed since |before|.
  std::vector<bool> LineStateLocked() const UMDEV_REQUIRES(mu_);
  void KickLocked() UMDEV_REQUIRES(mu_);
  Result<void> ChangeFarEnd(const FarEndSpec& spec) UMDEV_EXCLUDES(attr_mu_, mu_);
  void DropMigrationLocked() UMDEV_REQUIRES(mu_);
  Result<void> LoadStreamLocked() UMDEV_REQUIRES(mu_);

  const unsigned num_ports_;
  const std::shared_ptr<irq::VirqfdLoop> resample_loop_;
  const std::function<void()> on_destroy_;
  irq::DeviceIrqs irqs_;

  Mutex attr_mu_;
  // Replaced only under attr_mu_; stopped before its far ends change.
  std::unique_ptr<LineThread> line_thread_ UMDEV_GUARDED_BY(attr_mu_);

  mutable Mutex mu_ UMDEV_ACQUIRED_AFTER(attr_mu_);
  PciConfigSpace config_ UMDEV_GUARDED_BY(mu_);
  std::vector<Port> ports_ UMDEV_GUARDED_BY(mu_);
  FarEndSpec far_end_ UMDEV_GUARDED_BY(mu_);
  // One per port for pty and socket far ends; empty for loopback.
  std::vector<LineEnd> ends_ UMDEV_GUARDED_BY(mu_);
  // The line thread's wake eventfd while it runs (-1 otherwise), so register
  // paths holding only mu_ can kick it.
  int line_wake_fd_ UMDEV_GUARDED_BY(mu_) = -1;
  bool open_ UMDEV_GUARDED_BY(mu_) = false;
  bool line_high_ UMDEV_GUARDED_BY(mu_) = false;
  irq::Virqfd resample_ UMDEV_GUARDED_BY(mu_);

  vfio_device_mig_state mig_state_ UMDEV_GUARDED_BY(mu_) = VFIO_DEVICE_STATE_RUNNING;
  // The saving side's stream and how far it was read; the resuming side's.
  std::vector<std::byte> saving_ UMDEV_GUARDED_BY(mu_);
  size_t saving_pos_ UMDEV_GUARDED_BY(mu_) = 0;
  bool has_saving_ UMDEV_GUARDED_BY(mu_) = false;
  std::vector<std::byte> resuming_ UMDEV_GUARDED_BY(mu_);
  bool has_resuming_ UMDEV_GUARDED_BY(mu_) = false;
};

}  // namespace umdev::vendor::serial
