// PciTestDevice and PciTestParentDriver: an emulated PCI function with
// registers, interrupts, asynchronous DMA and migration, for end-to-end tests
// (QEMU vfio-user-pci) and vfio-user server tests. The register map below is
// a contract those tests rely on.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "umdev/common/mapping.h"
#include "umdev/common/mutex.h"
#include "umdev/common/unique_fd.h"
#include "umdev/irq/device_irqs.h"
#include "umdev/irq/virqfd.h"
#include "umdev/mdev_core/dma_access.h"
#include "umdev/mdev_core/parent_driver.h"
#include "umdev/mdev_core/pci_config_space.h"

namespace umdev::testing {

namespace pci_test {

// --- Configuration space (256 bytes) ----------------------------------------
inline constexpr uint16_t kVendorId = 0x5554;  // 'UT': an unassigned test id.
inline constexpr uint16_t kDeviceId = 0x0001;
inline constexpr uint16_t kSubsystemVendorId = 0x5554;
inline constexpr uint16_t kSubsystemId = 0x0001;
inline constexpr uint8_t kRevision = 1;
inline constexpr uint32_t kClassCode = 0xff0000;  // Unclassified; prog-if 0.
inline constexpr uint32_t kConfigSize = 256;
// Capability offsets (PM -> MSI -> MSI-X, linked from 0x34).
inline constexpr uint8_t kPmCapOffset = 0x40;
inline constexpr uint8_t kMsiCapOffset = 0x48;   // 1 vector, 64-bit, no masking.
inline constexpr uint8_t kMsixCapOffset = 0x58;  // 8 vectors in BAR2.

// --- Interrupts --------------------------------------------------------------
inline constexpr uint32_t kMsiVectors = 1;
inline constexpr uint32_t kMsixVectors = 8;

// --- BAR sizes (VFIO regions 0..5; BAR4, BAR5, ROM and VGA are size 0) -------
inline constexpr uint64_t kBar0Size = 0x1000;   // 32-bit MMIO, trapped.
inline constexpr uint64_t kBar1Size = 16;       // I/O ports, plain RW bytes.
inline constexpr uint64_t kBar2Size = 0x1000;   // 32-bit MMIO: MSI-X table + PBA.
inline constexpr uint64_t kBar3Size = 0x10000;  // Type "mmap" only: memfd-backed.

// --- BAR0 registers: 32-bit, accessed 4 bytes at a 4-aligned offset or 8 bytes
// at an 8-aligned one (two registers, low first). Other sizes, and offsets in
// [kRegsEnd, kBufferOffset), are EINVAL. Writes to RO registers are ignored;
// WO registers read 0.
inline constexpr uint32_t kRegId = 0x00;  // RO.
inline constexpr uint32_t kIdValue = 0x756d6476;
inline constexpr uint32_t kRegScratch = 0x04;  // RW.
// WO: writing v raises vector v of the enabled mode: MSI or MSI-X when one is
// enabled (an out-of-range v is dropped), otherwise INTx (v ignored): sets
// IRQ_STATUS bit 0 and asserts the level-triggered INTx line.
inline constexpr uint32_t kRegIrqRaise = 0x08;
// RW1C. Bit 0: INTx asserted. While it stays set, each INTx unmask (EOI)
// signals again. Mirrored in config Status.Interrupt Status. Command.INTx
// Disable keeps the line from being signalled (the bit still reads 1).
inline constexpr uint32_t kRegIrqStatus = 0x0c;
inline constexpr uint32_t kIrqStatusIntx = 1u << 0;
inline constexpr uint32_t kRegDmaAddrLo = 0x10;  // RW.
inline constexpr uint32_t kRegDmaAddrHi = 0x14;  // RW.
inline constexpr uint32_t kRegDmaLen = 0x18;     // RW; 1..kDmaMaxLen, else the DMA fails EINVAL.
// Writing starts a transfer on the device's worker thread (never on the
// caller's): DMA_STATUS turns busy at once. A write while busy fails EBUSY and
// starts nothing. Reads return the last value written.
inline constexpr uint32_t kRegDmaCmd = 0x1c;
inline constexpr uint32_t kDmaCmdOpMask = 0x3;
inline constexpr uint32_t kDmaOpToDevice = 1;    // guest[addr, addr + len) -> buffer[0, len).
inline constexpr uint32_t kDmaOpFromDevice = 2;  // buffer[0, len) -> guest[addr, addr + len).
// Raise vector 0 on completion, success or failure (as for IRQ_RAISE 0).
inline constexpr uint32_t kDmaCmdIrq = 1u << 8;
inline constexpr uint32_t kRegDmaStatus = 0x20;  // RO.
inline constexpr uint32_t kDmaStatusIdle = 0;
inline constexpr uint32_t kDmaStatusBusy = 1;
inline constexpr uint32_t kDmaStatusDone = 2;
inline constexpr uint32_t kDmaStatusError = 3;
// RO: positive errno of the last failure (EINVAL bad length or op, or the
// DmaAccess error, e.g. EFAULT); cleared when a transfer succeeds.
inline constexpr uint32_t kRegDmaError = 0x24;
inline constexpr uint32_t kRegDmaCount = 0x28;  // RO: completed (successful) transfers.
inline constexpr uint32_t kRegsEnd = 0x2c;
// The device buffer: any access of 1, 2, 4 or 8 bytes aligned to its size.
inline constexpr uint32_t kBufferOffset = 0x800;
inline constexpr uint32_t kBufferSize = 0x800;
inline constexpr uint32_t kDmaMaxLen = kBufferSize;

// --- BAR2: MSI-X table (QEMU emulates it; accesses are stored) and PBA -------
inline constexpr uint32_t kMsixTableOffset = 0;
// Reads return DeviceIrqs::MsixPendingWord(); writes are ignored (RO, §6.8.2.10).
inline constexpr uint32_t kMsixPbaOffset = 0x800;

// --- BAR3 (type "mmap"): [0, kBar3TrappedSize) only by region access; the
// sparse-mmap capability offers [kBar3TrappedSize, kBar3Size). Region accesses
// anywhere in the BAR reach the same memfd memory.
inline constexpr uint64_t kBar3TrappedSize = 0x1000;

// --- Migration stream (STOP_COPY -> RESUMING), little-endian:
//   u32 magic, u32 version, u32 type (0 basic, 1 mmap),
//   u32 scratch, irq_status, dma_addr_lo, dma_addr_hi, dma_len, dma_cmd,
//       dma_status, dma_error, dma_count,
//   u8 buffer[kBufferSize], u8 bar1[kBar1Size], u8 config[kConfigSize],
//   u32 bar3_len (0 or kBar3Size), u8 bar3[bar3_len].
inline constexpr uint32_t kMigrationMagic = 0x54505455;  // "UTPT"
inline constexpr uint32_t kMigrationVersion = 1;

}  // namespace pci_test

// One instance of the test PCI function. Thread-safe: the transport calls the
// DeviceOps and MigrationOps, the device's worker thread runs DMA, and its
// VirqfdLoop thread handles INTx resample eventfds.
//
// BAR accesses are served whatever Command.Memory/IO say: QEMU forwards them
// regardless, and tests read registers before the guest enables decoding.
// Close() disables every interrupt but keeps register state (a vfio-user
// client may reconnect to the same device). Reset() returns registers, buffer,
// BAR1, config space and interrupt state to power-on; a transfer then in
// flight completes unseen. Transfers start only in migration state RUNNING; a
// transfer still busy when the state is saved runs again on the destination.
class PciTestDevice final : public DeviceOps, public MigrationOps {
 public:
  enum class Type { kBasic, kMmap };

  // Errors: memfd_create/ftruncate/mmap's errno (kMmap), VirqfdLoop's.
  static Result<std::unique_ptr<PciTestDevice>> Create(Type type, DmaAccess& dma);
  PciTestDevice(const PciTestDevice&) = delete;
  PciTestDevice& operator=(const PciTestDevice&) = delete;
  ~PciTestDevice() override;

  // DeviceOps.
  void Close() override;
  DeviceInfo GetInfo() override;
  Result<RegionInfo> GetRegionInfo(uint32_t index) override;
  Result<size_t> RegionRead(uint32_t index, uint64_t offset, std::span<std::byte> out) override;
  Result<size_t> RegionWrite(uint32_t index, uint64_t offset,
                             std::span<const std::byte> data) override;
  Result<IrqInfo> GetIrqInfo(uint32_t index) override;
  Result<void> SetIrqs(IrqSet& set) override;
  Result<void> Reset() override;
  void Request(unsigned count) override;
  MigrationOps* migration() override { return this; }

  // MigrationOps: single arcs RUNNING<->STOP, STOP<->STOP_COPY, STOP<->RESUMING.
  uint64_t flags() const override { return VFIO_MIGRATION_STOP_COPY; }
  vfio_device_mig_state GetState() override;
  // Errors: EINVAL not a single arc (or from ERROR); EINVAL a malformed
  // stream on RESUMING -> STOP, which leaves the device in ERROR.
  Result<void> SetState(vfio_device_mig_state next) override;
  Result<uint64_t> GetDataSize() override;
  // Errors: EINVAL not in STOP_COPY.
  Result<size_t> ReadData(std::span<std::byte> out) override;
  // Errors: EINVAL not in RESUMING, or more data than any stream holds.
  Result<size_t> WriteData(std::span<const std::byte> data) override;

  // For tests: the interrupt state, and a wait until no transfer is busy
  // (returns DMA_STATUS; kDmaStatusBusy only if |timeout| passed).
  const irq::DeviceIrqs& irqs() const { return irqs_; }
  uint32_t WaitDmaIdle(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  Type type() const { return type_; }

 private:
  struct DmaJob {
    uint64_t addr = 0;
    uint32_t len = 0;
    uint32_t cmd = 0;
    uint64_t generation = 0;
  };

  PciTestDevice(Type type, DmaAccess& dma, std::unique_ptr<irq::VirqfdLoop> loop,
                UniqueFd bar3_fd, Mapping bar3);
  void BuildConfigSpace();

  Result<size_t> Bar0Read(uint64_t offset, std::span<std::byte> out) UMDEV_REQUIRES(mu_);
  Result<size_t> Bar0Write(uint64_t offset, std::span<const std::byte> data) UMDEV_REQUIRES(mu_);
  uint32_t ReadRegister(uint32_t offset) const UMDEV_REQUIRES(mu_);
  Result<void> WriteRegister(uint32_t offset, uint32_t value) UMDEV_REQUIRES(mu_);
  Result<size_t> Bar2Read(uint64_t offset, std::span<std::byte> out) UMDEV_REQUIRES(mu_);
  Result<size_t> Bar2Write(uint64_t offset, std::span<const std::byte> data) UMDEV_REQUIRES(mu_);

  void Raise(uint32_t vector) UMDEV_REQUIRES(mu_);
  // Drives the INTx line from IRQ_STATUS and Command.INTx Disable.
  void UpdateIntxLine() UMDEV_REQUIRES(mu_);
  void ResetRegisters() UMDEV_REQUIRES(mu_);
  void QueueDma() UMDEV_REQUIRES(mu_);
  void WorkerLoop();
  void RunDma(const DmaJob& job);

  std::vector<std::byte> SaveState() const UMDEV_REQUIRES(mu_);
  Result<void> LoadState(std::span<const std::byte> stream) UMDEV_REQUIRES(mu_);
  size_t StreamSize() const;

  const Type type_;
  DmaAccess& dma_;
  const std::unique_ptr<irq::VirqfdLoop> resample_loop_;  // Outlives irqs_.
  irq::DeviceIrqs irqs_;
  const UniqueFd bar3_fd_;  // Invalid for kBasic.
  const Mapping bar3_;      // The memfd, mapped; shared with the user's mmap.

  mutable Mutex mu_;
  CondVar cv_;  // Signals job queued, job finished, stop, state RUNNING.
  PciConfigSpace config_ UMDEV_GUARDED_BY(mu_);
  uint32_t scratch_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t irq_status_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t dma_addr_lo_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t dma_addr_hi_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t dma_len_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t dma_cmd_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t dma_status_ UMDEV_GUARDED_BY(mu_) = pci_test::kDmaStatusIdle;
  uint32_t dma_error_ UMDEV_GUARDED_BY(mu_) = 0;
  uint32_t dma_count_ UMDEV_GUARDED_BY(mu_) = 0;
  std::vector<std::byte> buffer_ UMDEV_GUARDED_BY(mu_);
  std::vector<std::byte> bar1_ UMDEV_GUARDED_BY(mu_);
  std::vector<std::byte> msix_table_ UMDEV_GUARDED_BY(mu_);
  // Bumped by Reset() and LoadState(): a finishing transfer of an older
  // generation leaves no trace.
  uint64_t generation_ UMDEV_GUARDED_BY(mu_) = 0;
  std::optional<DmaJob> queued_ UMDEV_GUARDED_BY(mu_);
  bool worker_running_job_ UMDEV_GUARDED_BY(mu_) = false;
  bool stop_ UMDEV_GUARDED_BY(mu_) = false;

  vfio_device_mig_state mig_state_ UMDEV_GUARDED_BY(mu_) = VFIO_DEVICE_STATE_RUNNING;
  std::vector<std::byte> mig_out_ UMDEV_GUARDED_BY(mu_);
  size_t mig_out_pos_ UMDEV_GUARDED_BY(mu_) = 0;
  std::vector<std::byte> mig_in_ UMDEV_GUARDED_BY(mu_);

  std::thread worker_;  // Last: started once everything above exists.
};

// Parent "test_pci" (configurable) with types "basic" and "mmap" sharing
// |max_instances|. Thread-safe.
class PciTestParentDriver final : public ParentDriver {
 public:
  struct Options {
    std::string parent_name = "test_pci";
    unsigned max_instances = 4;
  };

  explicit PciTestParentDriver(Options options) : options_(std::move(options)) {}

  std::string parent_name() const override { return options_.parent_name; }
  std::string driver_name() const override { return "test_pci"; }
  std::vector<MdevTypeSpec> types() const override;
  unsigned max_instances() const override { return options_.max_instances; }
  // Errors: EINVAL an unknown type; PciTestDevice::Create's.
  Result<std::unique_ptr<DeviceOps>> Probe(const ProbeContext& context) override;

 private:
  const Options options_;
};

}  // namespace umdev::testing
