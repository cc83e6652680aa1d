// QemuQtest: a real QEMU (from the cached Debian trixie root that scripts/qemu-root
// builds) driven over the qtest line protocol, for end-to-end tests of vfio-user.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"

namespace umdev::test {

// The root the tests run QEMU in: $UMDEV_QEMU_ROOT (set by `make test`), or
// nullopt when unset or empty.
std::optional<std::filesystem::path> QemuRootFromEnvironment();

// The path |host_path| has inside |root| ("/tmp/x/dev.sock"); EINVAL if it is
// not strictly under |root| (symlinks and ".." resolved first).
Result<std::string> PathInsideRoot(const std::filesystem::path& root,
                                   const std::filesystem::path& host_path);

// A fresh directory under ROOT/tmp for sockets the chrooted QEMU must reach;
// removed with its contents on destruction. Used by the test thread only.
class RootScratchDir {
 public:
  static Result<RootScratchDir> Create(const std::filesystem::path& root);
  RootScratchDir(RootScratchDir&& other) noexcept;
  RootScratchDir& operator=(RootScratchDir&& other) noexcept;
  RootScratchDir(const RootScratchDir&) = delete;
  RootScratchDir& operator=(const RootScratchDir&) = delete;
  ~RootScratchDir();

  const std::filesystem::path& path() const { return path_; }  // host path

 private:
  explicit RootScratchDir(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

struct VfioUserPciDevice {
  std::filesystem::path socket;  // host path of the server's socket, under the root
  std::string addr = "04.0";     // PCI slot.function on bus 0
  std::string id;                // QOM id; none when empty
};

struct QemuQtestOptions {
  std::filesystem::path root;  // from QemuRootFromEnvironment()
  uint64_t memory_mib = 128;
  // true: RAM is a share=on memfd, so DMA_MAP carries fds; false: private RAM,
  // so every device access to guest memory goes through DMA_READ/DMA_WRITE.
  bool shared_memory = true;
  std::vector<VfioUserPciDevice> devices;
  std::vector<std::string> extra_args;  // appended to the command line as given
  // Covers exec, every device's realize handshake and the first qtest reply.
  std::chrono::milliseconds start_timeout{30'000};
  std::chrono::milliseconds command_timeout{10'000};
};

// One QEMU process (pid() is QEMU itself, chrooted). Errors: FAIL/ERR replies
// are EIO with QEMU's text; a dead or silent QEMU is EPIPE / ETIMEDOUT with the
// exit status and stderr tail in the context. Not thread-safe: one test thread.
class QemuQtest {
 public:
  static Result<QemuQtest> Start(QemuQtestOptions options);

  QemuQtest(QemuQtest&& other) noexcept;
  QemuQtest& operator=(QemuQtest&& other) noexcept;
  QemuQtest(const QemuQtest&) = delete;
  QemuQtest& operator=(const QemuQtest&) = delete;
  ~QemuQtest();  // SIGKILLs QEMU if still running and reaps it

  // Port I/O.
  Result<void> Outb(uint16_t port, uint8_t value);
  Result<void> Outw(uint16_t port, uint16_t value);
  Result<void> Outl(uint16_t port, uint32_t value);
  Result<uint8_t> Inb(uint16_t port);
  Result<uint16_t> Inw(uint16_t port);
  Result<uint32_t> Inl(uint16_t port);

  // Guest-physical memory (and MMIO: BARs answer like RAM here).
  Result<void> Writeb(uint64_t addr, uint8_t value);
  Result<void> Writew(uint64_t addr, uint16_t value);
  Result<void> Writel(uint64_t addr, uint32_t value);
  Result<void> Writeq(uint64_t addr, uint64_t value);
  Result<uint8_t> Readb(uint64_t addr);
  Result<uint16_t> Readw(uint64_t addr);
  Result<uint32_t> Readl(uint64_t addr);
  Result<uint64_t> Readq(uint64_t addr);
  Result<std::vector<uint8_t>> MemRead(uint64_t addr, size_t size);  // EINVAL if 0
  Result<void> MemWrite(uint64_t addr, std::span<const uint8_t> bytes);

  // Bus 0 configuration space through the 0xcf8/0xcfc mechanism; |offset| < 256
  // and aligned to the access size, else EINVAL.
  Result<uint8_t> ConfigRead8(uint8_t slot, uint8_t function, uint8_t offset);
  Result<uint16_t> ConfigRead16(uint8_t slot, uint8_t function, uint8_t offset);
  Result<uint32_t> ConfigRead32(uint8_t slot, uint8_t function, uint8_t offset);
  Result<void> ConfigWrite8(uint8_t slot, uint8_t function, uint8_t offset, uint8_t value);
  Result<void> ConfigWrite16(uint8_t slot, uint8_t function, uint8_t offset, uint16_t value);
  Result<void> ConfigWrite32(uint8_t slot, uint8_t function, uint8_t offset, uint32_t value);

  // Routes the gpio-in lines of |qom_path| ("ioapic") to "IRQ raise/lower N" lines.
  Result<void> IrqInterceptIn(std::string_view qom_path);
  // Returns once line |line| is at |raised| (at once if it already is), reading
  // QEMU's asynchronous IRQ lines; ETIMEDOUT after |timeout|.
  Result<void> WaitIrq(int line, bool raised = true,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // The level last reported for |line| (lines never reported are low), and how
  // many times it was raised; both only advance while the harness reads QEMU.
  bool IrqLevel(int line) const;
  int IrqRaiseCount(int line) const;

  // Advances the virtual clock by |ns|, or to the next deadline when nullopt;
  // returns the new clock value.
  Result<int64_t> ClockStep(std::optional<int64_t> ns = std::nullopt);

  // Sends one raw qtest line (no newline) and returns the text after "OK".
  // The caller must send only well-formed commands: QEMU asserts (aborts) on
  // missing or unparsable arguments of known commands.
  Result<std::string> Command(std::string_view line);

  // Sends |signal| to QEMU; does not wait (see WaitExit).
  Result<void> Kill(int signal);
  // Reaps QEMU, waiting up to |timeout|; returns the wait status (WIFEXITED...).
  Result<int> WaitExit(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // SIGTERM, then SIGKILL if QEMU has not exited within |timeout|; returns the
  // wait status.
  Result<int> Quit(std::chrono::milliseconds timeout = std::chrono::seconds(10));

  pid_t pid() const { return pid_; }
  std::optional<int> exit_status() const { return exit_status_; }
  // The last |max_bytes| QEMU wrote to stderr (realize errors land here).
  std::string StderrTail(size_t max_bytes = 4096) const;
  // The full command line, for failure messages.
  const std::vector<std::string>& argv() const { return argv_; }

 private:
  QemuQtest() = default;
  Result<std::string> ReadReply(std::chrono::steady_clock::time_point deadline);
  Result<std::string> ReadLine(std::chrono::steady_clock::time_point deadline);
  bool TakeAsyncLine(const std::string& line);
  Result<void> SendLine(std::string_view line, std::chrono::steady_clock::time_point deadline);
  Result<uint64_t> CommandValue(std::string_view line);
  Error Dead(int code, std::string_view what);
  void KillAndReap();

  pid_t pid_ = -1;
  UniqueFd qtest_;   // our end of QEMU's stdin/stdout socket pair
  UniqueFd stderr_;  // memfd QEMU's stderr is appended to
  UniqueFd pidfd_;   // readable once QEMU exits
  std::optional<int> exit_status_;
  std::string inbuf_;
  std::map<int, bool> irq_levels_;
  std::map<int, int> irq_raises_;
  std::chrono::milliseconds command_timeout_{10'000};
  std::vector<std::string> argv_;
};

}  // namespace umdev::test
