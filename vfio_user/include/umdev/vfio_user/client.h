// Client: the client side of vfio-user, as QEMU's vfio-user-pci speaks it,
// for tests, the e2e suite and umdev-probe. It can also serve guest memory to
// the server, answering DMA_READ/DMA_WRITE for fd-less maps.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mapping.h"
#include "umdev/common/mutex.h"
#include "umdev/common/unique_fd.h"
#include "umdev/vfio_user/message.h"
#include "umdev/vfio_user/protocol.h"

namespace umdev::vfio_user {

struct ClientOptions {
  // Every wait for a reply, and every blocked send (QEMU's x-msg-timeout).
  std::chrono::milliseconds timeout{5000};
  // Offered in VERSION; also the limits on what the server may send us.
  Capabilities offer = QemuOffer();
  // Send QEMU's legacy "migration" object with the offer.
  bool offer_legacy_migration = true;
  // False: Connect() leaves VERSION to the caller (Negotiate() or Call()).
  bool negotiate = true;

  static Capabilities QemuOffer() {
    Capabilities caps;
    caps.max_msg_fds = 16;
    caps.max_data_xfer_size = 1u << 20;
    caps.pgsizes = 4096;
    caps.max_dma_maps = 65535;
    caps.write_multiple = true;
    return caps;
  }
};

struct DeviceInfo {
  uint32_t flags = 0;  // VFIO_DEVICE_FLAGS_RESET | _PCI.
  uint32_t num_regions = 0;
  uint32_t num_irqs = 0;
};

struct SparseArea {
  uint64_t offset = 0;  // From the region's mmap offset.
  uint64_t size = 0;
};

struct RegionInfo {
  uint32_t index = 0;
  uint32_t flags = 0;  // VFIO_REGION_INFO_FLAG_*.
  uint64_t size = 0;
  uint64_t offset = 0;  // mmap offset into |fd|.
  // Present when the reply had a sparse-mmap capability.
  std::optional<std::vector<SparseArea>> sparse_areas;
  struct Type {
    uint32_t type = 0;
    uint32_t subtype = 0;
  };
  std::optional<Type> type;
  bool msix_mappable = false;  // VFIO_REGION_INFO_CAP_MSIX_MAPPABLE was in the chain.
  UniqueFd fd;  // The region's fd when the server sent one.
};

struct IrqInfo {
  uint32_t index = 0;
  uint32_t flags = 0;  // VFIO_IRQ_INFO_*.
  uint32_t count = 0;
};

struct RegionIoFds {
  RegionIoFdsPayload header;
  std::vector<std::byte> entries;  // |header.count| sub-region entries, as sent.
  std::vector<UniqueFd> fds;
};

// How a REGION_WRITE is sent: waiting for the reply, or posted (NO_REPLY).
enum class WriteMode { kWait, kPosted };

// Thread-safe: any thread may call any method; a receive thread owned by the
// client reads the socket, hands replies to their callers and answers the
// server's DMA_READ/DMA_WRITE at any time.
class Client {
 public:
  // Connects to |socket_path| and (unless options.negotiate is false)
  // negotiates VERSION. Errors: connect's errno; those of Negotiate().
  static Result<std::unique_ptr<Client>> Connect(const std::string& socket_path,
                                                 ClientOptions options = {});
  // The same over an already-connected stream socket, which the client owns.
  static Result<std::unique_ptr<Client>> Adopt(UniqueFd socket, ClientOptions options = {});

  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends VERSION with the offer and validates the reply as QEMU does.
  // Errors: the server's errno; EPROTO major != 0, minor above ours, JSON not
  // NUL-terminated or not parseable; ETIMEDOUT; ECONNRESET.
  Result<void> Negotiate();
  // The server's capabilities (the spec's defaults before Negotiate()).
  Capabilities server_caps() const;
  uint16_t server_minor() const;

  // Sends one message and waits for the reply with its msg_id, returned as it
  // came (error replies included). For tests of malformed input.
  // Errors: ETIMEDOUT; ECONNRESET the server went; ENOTCONN after Close().
  Result<Message> Call(uint16_t command, std::span<const std::byte> payload,
                       std::span<const int> fds = {}, uint32_t flags = kTypeCommand);
  Result<Message> Call(Command command, std::span<const std::byte> payload,
                       std::span<const int> fds = {}, uint32_t flags = kTypeCommand) {
    return Call(static_cast<uint16_t>(command), payload, fds, flags);
  }
  // Sends one message without waiting; returns its msg_id.
  Result<uint16_t> Send(uint16_t command, std::span<const std::byte> payload,
                        std::span<const int> fds = {}, uint32_t flags = kTypeCommand);

  // The typed commands. Error replies become Error{header.error_no} (EIO
  // when the server set no errno); malformed replies are EPROTO.
  Result<void> DmaMap(uint64_t iova, uint64_t size, uint32_t prot, int fd = -1,
                      uint64_t offset = 0);
  Result<void> DmaUnmap(uint64_t iova, uint64_t size);
  Result<void> DmaUnmapAll();
  Result<DeviceInfo> GetDeviceInfo();
  // The argsz two-step: asks with 32, again with the size the server wants.
  Result<RegionInfo> GetRegionInfo(uint32_t index);
  Result<RegionIoFds> GetRegionIoFds(uint32_t index);
  Result<IrqInfo> GetIrqInfo(uint32_t index);
  // DATA_EVENTFD with |action| (VFIO_IRQ_SET_ACTION_*): fds (-1 entries
  // de-assign) are sent as QEMU does, in runs of all-valid or all-invalid
  // fds of at most the server's max_msg_fds, argsz 20, start/count per run.
  Result<void> SetIrqEventfds(uint32_t index, uint32_t start, uint32_t action,
                              std::span<const int> fds);
  Result<void> SetIrqsNone(uint32_t index, uint32_t start, uint32_t count, uint32_t action);
  Result<void> SetIrqsBool(uint32_t index, uint32_t start, uint32_t action,
                           std::span<const uint8_t> values);
  // Split into messages of at most the server's max_data_xfer_size. Returns
  // the bytes read; a short chunk ends the read.
  Result<size_t> RegionRead(uint32_t region, uint64_t offset, std::span<std::byte> out);
  Result<void> RegionWrite(uint32_t region, uint64_t offset, std::span<const std::byte> data,
                           WriteMode mode = WriteMode::kWait);
  // 200 entries a message. Errors: EOPNOTSUPP the server did not offer it.
  Result<void> RegionWriteMulti(std::span<const WriteMultiEntry> writes,
                                WriteMode mode = WriteMode::kPosted);
  Result<void> Reset();
  // DEVICE_FEATURE: |flags| is feature | GET/SET/PROBE; |argsz| 0 means
  // 8 + data.size(). Returns the reply's data (after argsz and flags).
  Result<std::vector<std::byte>> DeviceFeature(uint32_t flags, std::span<const std::byte> data,
                                               uint32_t argsz = 0);
  Result<uint64_t> GetMigrationFlags();  // VFIO_MIGRATION_*.
  Result<uint32_t> GetMigrationState();  // VFIO_DEVICE_STATE_*.
  Result<void> SetMigrationState(uint32_t state);
  // Up to |size| bytes of the migration stream; fewer means its end.
  Result<std::vector<std::byte>> MigDataRead(uint32_t size);
  Result<void> MigDataWrite(std::span<const std::byte> data);

  // Guest memory the client serves. The memfd form maps the memfd here and
  // sends DMA_MAP with the fd when |share_fd|; otherwise, and always for the
  // span form (which the caller keeps alive until removal), DMA_MAP has no fd
  // and the server's DMA_READ/DMA_WRITE are answered from the memory.
  Result<std::span<std::byte>> AddGuestMemory(uint64_t iova, uint64_t size, bool share_fd,
                                              uint32_t prot = VFIO_DMA_MAP_FLAG_READ |
                                                              VFIO_DMA_MAP_FLAG_WRITE);
  Result<void> AddGuestMemory(uint64_t iova, std::span<std::byte> memory,
                              uint32_t prot = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE);
  // DMA_UNMAP of the whole registration, then forgets it. Errors: ENOENT.
  Result<void> RemoveGuestMemory(uint64_t iova);
  // The client's own view of its guest memory. Errors: EFAULT outside it.
  Result<void> ReadGuestMemory(uint64_t iova, std::span<std::byte> out) const;
  Result<void> WriteGuestMemory(uint64_t iova, std::span<const std::byte> data);

  // Requests from the server answered so far, and replies nobody waited for.
  uint64_t requests_served() const { return requests_served_.load(); }
  uint64_t unexpected_replies() const { return unexpected_replies_.load(); }
  bool connected() const;
  void set_timeout(std::chrono::milliseconds timeout) { timeout_ms_ = timeout.count(); }

  // Shuts the socket down, fails pending calls with ENOTCONN, joins the
  // receive thread. Idempotent; not from inside the client's own thread.
  void Close();

 private:
  struct Pending {
    std::optional<Message> reply;
  };
  struct GuestRegion {
    uint64_t size = 0;
    uint32_t prot = 0;
    std::byte* data = nullptr;
    Mapping mapping;  // Set for memfd-backed memory.
  };

  Client(UniqueFd socket, ClientOptions options);
  void Start();
  void ReceiveLoop();
  void Deliver(Message reply);
  void ServeRequest(Message request);
  Result<std::vector<std::byte>> ServeDma(const Message& request);
  void FailAll(Error error) UMDEV_EXCLUDES(mu_);
  Result<Message> Expect(Command command, std::span<const std::byte> payload,
                         std::span<const int> fds = {});
  Result<void> SendLocked(const Header& header, std::span<const std::byte> payload,
                          std::span<const int> fds) UMDEV_EXCLUDES(mu_);
  Result<void> RegisterGuest(uint64_t iova, GuestRegion region, int fd);
  // Finds [iova, iova+size) in the guest memory; nullptr outside.
  const GuestRegion* FindGuest(uint64_t iova, uint64_t size, uint64_t* base) const
      UMDEV_REQUIRES(mem_mu_);

  const ClientOptions options_;
  UniqueFd socket_;
  std::atomic<int64_t> timeout_ms_;
  std::thread receiver_;

  mutable Mutex mu_;
  CondVar replied_;
  uint16_t next_id_ UMDEV_GUARDED_BY(mu_) = 1;
  std::map<uint16_t, Pending> pending_ UMDEV_GUARDED_BY(mu_);
  std::optional<Error> broken_ UMDEV_GUARDED_BY(mu_);
  bool closed_ UMDEV_GUARDED_BY(mu_) = false;
  Capabilities server_caps_ UMDEV_GUARDED_BY(mu_);
  uint16_t server_minor_ UMDEV_GUARDED_BY(mu_) = 0;

  Mutex send_mu_;  // One message at a time on the socket.

  mutable Mutex mem_mu_;
  std::map<uint64_t, GuestRegion> guest_ UMDEV_GUARDED_BY(mem_mu_);  // By iova.

  std::atomic<uint64_t> requests_served_{0};
  std::atomic<uint64_t> unexpected_replies_{0};
};

}  // namespace umdev::vfio_user
