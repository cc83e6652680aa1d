// Session: one connected vfio-user client of one device.
#pragma once

#include <atomic>
#include <bitset>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "event_loop.h"
#include "umdev/common/error.h"
#include "umdev/common/mutex.h"
#include "umdev/common/unique_fd.h"
#include "umdev/mdev_core/container.h"
#include "umdev/mdev_core/device.h"
#include "umdev/vfio_user/message.h"

namespace umdev::vfio_user {

struct SessionLimits {
  std::chrono::milliseconds message_timeout{5000};
  uint32_t max_msg_fds = 16;
  uint64_t max_data_xfer_size = 1u << 20;
};

// A command's successful reply: its payload and at most one fd, borrowed
// from the device until the reply is sent.
struct Reply {
  std::vector<std::byte> payload;
  int fd = -1;
};

// What a session serves: the open device, the backend its client's DMA_MAPs
// fill, and what must outlive the device handle (the group file and its
// container, KVM's hold on the file), released after the DMA is unmapped.
struct OpenedDevice {
  std::unique_ptr<DeviceFile> file;
  std::shared_ptr<IommuBackend> iommu;
  std::shared_ptr<void> holder;
};

// Owns the device handle (opened through the group path, as QEMU with KVM
// does) and the backend the client's DMA_MAPs fill. Reads, dispatch and teardown run
// on the loop thread; DmaRead/DmaWrite (the device's message DMA) come from
// any thread, with no lock of ours held while the device is called.
class Session final : private DmaMessageChannel {
 public:
  Session(std::string name, UniqueFd socket, OpenedDevice device, EventLoop& loop,
          SessionLimits limits);
  // Teardown in the kernel's order: fail message DMA in flight, close the
  // device (the vendor drops eventfds and pins), detach the message channel,
  // unmap everything, release the holder (KVM's file, the group), close the
  // socket. Loop thread.
  ~Session() override;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  int fd() const { return socket_.get(); }
  // Serves what the socket has. Returns false once the client is gone or
  // broke the framing; the owner then destroys the session.
  bool OnReadable();

 private:
  // Reads one message without blocking: a queued command first, else the
  // socket. Replies to our requests are routed and not returned.
  Result<std::optional<Message>> NextCommand();
  void RouteReply(Message reply) UMDEV_EXCLUDES(mu_);
  void Dispatch(Message& message);
  Result<Reply> Handle(Message& message);
  void SendReply(const Header& request, const Result<Reply>& reply);

  Result<Reply> HandleVersion(const Message& message);
  Result<Reply> HandleDmaMap(Message& message);
  Result<Reply> HandleDmaUnmap(const Message& message);
  Result<Reply> HandleGetInfo(const Message& message);
  Result<Reply> HandleGetRegionInfo(const Message& message);
  Result<Reply> HandleGetRegionIoFds(const Message& message);
  Result<Reply> HandleGetIrqInfo(const Message& message);
  Result<Reply> HandleSetIrqs(Message& message);
  Result<Reply> HandleRegionRead(const Message& message);
  Result<Reply> HandleRegionWrite(const Message& message);
  Result<Reply> HandleRegionWriteMulti(const Message& message);
  Result<Reply> HandleDeviceFeature(const Message& message);
  Result<Reply> HandleMigDataRead(const Message& message);
  Result<Reply> HandleMigDataWrite(const Message& message);

  // DmaMessageChannel: DMA_READ / DMA_WRITE to the client.
  Result<void> DmaRead(uint64_t iova, std::span<std::byte> out) override;
  Result<void> DmaWrite(uint64_t iova, std::span<const std::byte> data) override;
  // Sends a request and waits for its reply. On the loop thread it reads the
  // socket itself meanwhile, queueing commands that arrive for later.
  Result<Message> Request(Command command, std::span<const std::byte> payload)
      UMDEV_EXCLUDES(mu_);
  Result<void> Send(const Header& header, std::span<const std::byte> payload, int fd = -1)
      UMDEV_EXCLUDES(send_mu_);

  const std::string name_;
  const UniqueFd socket_;
  std::unique_ptr<DeviceFile> file_;
  std::shared_ptr<IommuBackend> iommu_;
  std::shared_ptr<void> holder_;
  EventLoop& loop_;
  const SessionLimits limits_;

  // Commands a client may have queued while it owes us a DMA reply, and
  // their bytes: past either, the client is dropped.
  static constexpr size_t kMaxDeferred = 64;
  static constexpr size_t kMaxDeferredBytes = 16u << 20;

  // Gives up on the client from any thread: requests waiting for it fail at
  // once and the session thread drops it.
  void Abandon(const std::string& why) UMDEV_EXCLUDES(mu_);
  // Set by Abandon: the client is dropped once the current command is answered.
  std::atomic<bool> abandoned_{false};

  // Loop thread only.
  MessageReader reader_;
  std::deque<Message> deferred_;
  size_t deferred_bytes_ = 0;
  bool negotiated_ = false;
  bool send_failed_ = false;
  std::bitset<64> warned_;  // Commands whose failure was logged at warn level.
  // max_dma_maps as negotiated in VERSION (the lower of ours and the client's).
  uint32_t max_dma_maps_ = 0;
  // Written at VERSION, read by DMA from device threads.
  std::atomic<uint64_t> peer_max_xfer_{1u << 20};

  Mutex send_mu_;  // One sendmsg at a time: replies and our requests interleave.

  Mutex mu_;
  CondVar replied_;
  bool closed_ UMDEV_GUARDED_BY(mu_) = false;
  uint16_t next_request_id_ UMDEV_GUARDED_BY(mu_) = 0;
  // Our requests awaiting a reply, by msg_id; filled by RouteReply.
  std::map<uint16_t, std::optional<Message>> pending_ UMDEV_GUARDED_BY(mu_);
};

}  // namespace umdev::vfio_user
