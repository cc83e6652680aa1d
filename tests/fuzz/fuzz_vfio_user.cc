// libFuzzer target: the vfio-user server over its real socket, with a real
// mtty and a real gpu (CPU engine) behind it. The input is a byte stream cut
// into chunks, each optionally carrying descriptors (simulated fds):
//   u8 control: bits 0-1 the device (0 mtty, else gpu) on the first chunk;
//               bits 2-4 an fd kind to attach (0 none, 1 eventfd, 2 memfd,
//               3 sealed memfd, 4 pipe, 5 socket, 6 /dev/null, 7 two eventfds)
//   u16 length, then |length| bytes sent as they are.
// A VERSION is sent first unless the first control byte has bit 7 set.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include "fuzz_world.h"
#include "umdev/common/unix_address.h"
#include "umdev/mdev_core/registry.h"
#include "umdev/pinning/type1_driver.h"
#include "umdev/vendor/gpu/gpu_parent.h"
#include "umdev/vendor/serial/mtty_parent.h"
#include "umdev/vfio_user/message.h"
#include "umdev/vfio_user/server.h"

namespace {

using namespace umdev;

struct World {
  World() {
    fuzz::PrepareRegistry(registry);
    dir = std::filesystem::temp_directory_path() / ("umdev-fuzz-vu-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    registry.RegisterParent(vendor::serial::MttyParent::Create().value()).value();
    fuzz::RegisterCpuGpu(registry);
    vfio_user::ServerOptions options;
    options.socket_dir = (dir / "vfio-user").string();
    options.message_timeout = std::chrono::milliseconds(100);
    options.max_msg_fds = 4;
    options.max_data_xfer_size = 64 * 1024;
    server = std::make_unique<vfio_user::Server>(registry, options);
    server->Start().value();
    registry.CreateMdev("mtty", "mtty-1", devices[0]).value();
    registry.CreateMdev("gpu0", "gpu-1of2", devices[1]).value();
  }
  std::filesystem::path dir;
  Registry registry;
  std::unique_ptr<vfio_user::Server> server;
  Uuid devices[2] = {Uuid::Generate(), Uuid::Generate()};
};

UniqueFd MakeFd(unsigned kind) {
  switch (kind) {
    case 1:
    case 7:
      return UniqueFd(::eventfd(0, EFD_CLOEXEC));
    case 2:
    case 3: {
      UniqueFd fd(::memfd_create("fuzz", MFD_CLOEXEC | (kind == 3 ? MFD_ALLOW_SEALING : 0)));
      (void)::ftruncate(fd.get(), 0x10000);
      if (kind == 3) (void)::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL);
      return fd;
    }
    case 4: {
      int fds[2];
      if (::pipe2(fds, O_CLOEXEC) != 0) return UniqueFd();
      ::close(fds[0]);
      return UniqueFd(fds[1]);
    }
    case 5:
      return UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    case 6:
      return UniqueFd(::open("/dev/null", O_RDWR | O_CLOEXEC));
    default:
      return UniqueFd();
  }
}

void Send(int socket, const uint8_t* bytes, size_t size, unsigned kind) {
  std::vector<UniqueFd> fds;
  if (kind != 0) fds.push_back(MakeFd(kind));
  if (kind == 7) fds.push_back(MakeFd(kind));
  std::vector<int> raw;
  for (const UniqueFd& fd : fds) {
    if (fd.valid()) raw.push_back(fd.get());
  }
  iovec iov{const_cast<uint8_t*>(bytes), size};
  // Never waits: a server that stopped reading is the input's business.
  (void)vfio_user::SendWithFds(socket, std::span(&iov, 1), raw, MSG_DONTWAIT);
}

// Reads whatever the server sends (answering nothing) until it goes quiet.
void Drain(int socket, int quiet_ms) {
  char buffer[65536];
  for (;;) {
    pollfd p{socket, POLLIN, 0};
    if (::poll(&p, 1, quiet_ms) <= 0) return;
    if (::recv(socket, buffer, sizeof(buffer), MSG_DONTWAIT) <= 0) return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();
  if (size == 0) return 0;
  const Uuid& uuid = world->devices[(data[0] & 3) != 0 ? 1 : 0];
  UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr = UnixAddress(world->server->SocketPath(uuid)).value();
  if (::connect(socket.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return 0;
  if ((data[0] & 0x80) == 0) {
    static const char kVersion[] = "\0\0\0\0{}";
    vfio_user::Header header{};
    header.msg_id = 1;
    header.command = static_cast<uint16_t>(vfio_user::Command::kVersion);
    (void)vfio_user::SendMessage(socket.get(), header,
                                 std::as_bytes(std::span(kVersion, sizeof(kVersion))));
  }
  size_t at = 0;
  while (at + 3 <= size) {
    const unsigned kind = (data[at] >> 2) & 7;
    uint16_t length;
    std::memcpy(&length, data + at + 1, 2);
    at += 3;
    length = static_cast<uint16_t>(std::min<size_t>(length, size - at));
    Send(socket.get(), data + at, length, kind);
    at += length;
    Drain(socket.get(), 0);
  }
  Drain(socket.get(), 5);
  // The session must be gone before the next input connects, and before
  // libFuzzer exits after the last one: a session still tearing down (it
  // unmaps and logs) while exit() destroys the logger and LeakSanitizer
  // stops the world is a use-after-free whose report then deadlocks.
  socket.Reset();
  for (int i = 0; i < 2000 && world->server->IsConnected(uuid); ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  return 0;
}
