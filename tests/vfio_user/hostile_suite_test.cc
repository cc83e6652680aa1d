// The hostile-client suite: every case of hostile_cases.cc over the real
// socket of a server with a real mtty and a real gpu (CPU engine) behind it.
// Each case asserts its frames' exact errnos (or a clean disconnect); then
// that a fresh client is served on every device, and that descriptors and
// locked memory are back at their baseline.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "hostile_cases.h"
#include "raw_peer.h"
#include "server_fixture.h"
#include "umdev/pinning/type1_driver.h"
#include "umdev/vendor/gpu/gpu_parent.h"
#include "umdev/vendor/serial/mtty_parent.h"
#include "umdev/vfio_user/server.h"

namespace umdev::vfio_user::testing {
namespace {

UniqueFd MakeFd(FdKind kind) {
  switch (kind) {
    case FdKind::kNone:
      return UniqueFd();
    case FdKind::kEventFd:
      return UniqueFd(::eventfd(0, EFD_CLOEXEC));
    case FdKind::kMemfd:
    case FdKind::kShortMemfd:
    case FdKind::kSealableMemfd:
    case FdKind::kSealedMemfd: {
      const bool sealable = kind == FdKind::kSealableMemfd || kind == FdKind::kSealedMemfd;
      UniqueFd fd(::memfd_create("hostile", MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0)));
      EXPECT_EQ(::ftruncate(fd.get(), kind == FdKind::kShortMemfd ? 0x1000 : 0x10000), 0);
      if (kind == FdKind::kSealedMemfd) {
        EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
      }
      return fd;
    }
    case FdKind::kPipe: {
      int fds[2];
      EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
      ::close(fds[0]);
      return UniqueFd(fds[1]);
    }
    case FdKind::kSocket:
      return UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    case FdKind::kDevNull:
      return UniqueFd(::open("/dev/null", O_RDWR | O_CLOEXEC));
    case FdKind::kEpoll:
      return UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  }
  return UniqueFd();
}

// Sends exactly |bytes|, with the fds on the first byte.
bool SendRaw(int socket, const std::vector<std::byte>& bytes, const std::vector<UniqueFd>& fds) {
  std::vector<int> raw;
  for (const UniqueFd& fd : fds) raw.push_back(fd.get());
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  return SendWithFds(socket, std::span(&iov, 1), raw).has_value();
}

}  // namespace

// Case names instead of byte dumps in GoogleTest's messages.
void PrintTo(const HostileCase& test, std::ostream* out) { *out << test.name; }

namespace {

class HostileClientTest : public ::testing::TestWithParam<HostileCase> {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() /
           ("umdev-hostile-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    registry_ = new Registry(RegistryOptions{});
    account_ = std::make_shared<pinning::LockedMemoryAccount>(256ull << 20);
    ASSERT_TRUE(registry_->iommu_drivers().Register(
        std::make_shared<pinning::Type1Driver>(account_)));
    auto mtty = vendor::serial::MttyParent::Create();
    ASSERT_TRUE(mtty.has_value());
    ASSERT_TRUE(registry_->RegisterParent(*mtty));
    auto gpu = vendor::gpu::GpuParent::Create({.parent_name = "gpu0",
                                               .engine = vendor::gpu::EngineKind::kCpu,
                                               .memory = uint64_t{64} << 20});
    ASSERT_TRUE(gpu.has_value()) << gpu.error().Describe();
    ASSERT_TRUE(registry_->RegisterParent(*gpu));
    ServerOptions options;
    options.socket_dir = (dir_ / "vfio-user").string();
    options.message_timeout = std::chrono::milliseconds(1000);
    options.max_msg_fds = 4;
    options.max_data_xfer_size = 1u << 20;
    server_ = new Server(*registry_, options);
    ASSERT_TRUE(server_->Start());
    devices_ = new std::map<std::string, Uuid>{{"mtty", Uuid::Generate()},
                                               {"gpu", Uuid::Generate()}};
    ASSERT_TRUE(registry_->CreateMdev("mtty", "mtty-1", devices_->at("mtty")));
    ASSERT_TRUE(registry_->CreateMdev("gpu0", "gpu-1of2", devices_->at("gpu")));
    ServeEveryDevice();
    baseline_fds_ = OpenFdCount();
  }

  static void TearDownTestSuite() {
    delete server_;
    delete registry_;
    delete devices_;
    account_.reset();
    std::filesystem::remove_all(dir_);
  }

  // A fresh client on every device negotiates, reads its info and leaves.
  static void ServeEveryDevice() {
    for (const auto& [name, uuid] : *devices_) {
      WaitDetached(uuid);
      auto peer = RawPeer::Connect(server_->SocketPath(uuid));
      ASSERT_TRUE(peer.has_value()) << name;
      ASSERT_EQ(RawPeer::ErrorOf(peer->Negotiate()), 0) << name;
      Message info = peer->Call(Command::kDeviceGetInfo, Payload(DeviceInfoPayload{16}));
      ASSERT_EQ(RawPeer::ErrorOf(info), 0) << name;
      EXPECT_GT(LoadPayload<DeviceInfoPayload>(info.payload)->num_regions, 0u) << name;
    }
    for (const auto& [name, uuid] : *devices_) WaitDetached(uuid);
  }

  static void WaitDetached(const Uuid& uuid) {
    for (int i = 0; i < 1000 && server_->IsConnected(uuid); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_FALSE(server_->IsConnected(uuid)) << "the client's session never ended";
  }

  static inline std::filesystem::path dir_;
  static inline Registry* registry_ = nullptr;
  static inline Server* server_ = nullptr;
  static inline std::shared_ptr<pinning::LockedMemoryAccount> account_;
  static inline std::map<std::string, Uuid>* devices_ = nullptr;
  static inline size_t baseline_fds_ = 0;
};

TEST_P(HostileClientTest, IsAnsweredAndHarmsNoOne) {
  const HostileCase& test = GetParam();
  const Uuid uuid = devices_->at(test.device);
  {
    auto connected = RawPeer::Connect(server_->SocketPath(uuid));
    ASSERT_TRUE(connected.has_value());
    RawPeer& peer = *connected;
    if (test.negotiate) {
      ASSERT_EQ(RawPeer::ErrorOf(peer.Negotiate()), 0);
    }
    for (size_t i = 0; i < test.frames.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "frame " << i);
      const Frame& frame = test.frames[i];
      std::vector<UniqueFd> fds;
      for (int n = 0; n < frame.fd_count; ++n) fds.push_back(MakeFd(frame.fd));
      const bool sent = SendRaw(peer.fd(), frame.bytes, fds);
      fds.clear();  // The server holds its own copies (or closed them).
      if (frame.outcome == Outcome::kHangUp) break;
      if (!sent) {
        ASSERT_EQ(frame.outcome, Outcome::kAnything) << "the server closed before this frame";
        break;
      }
      if (frame.outcome == Outcome::kNoReply) continue;
      // A random frame may be posted (NO_REPLY): silence is an answer too.
      auto reply = peer.Receive(frame.outcome == Outcome::kAnything
                                    ? std::chrono::milliseconds(300)
                                    : std::chrono::milliseconds(10000));
      if (frame.outcome == Outcome::kDisconnect) {
        ASSERT_FALSE(reply.has_value()) << "got a reply where a disconnect was due";
        EXPECT_EQ(reply.error().code, ECONNRESET);
        break;
      }
      if (frame.outcome == Outcome::kAnything) {
        if (!reply.has_value()) {
          if (reply.error().code == ETIMEDOUT) continue;
          EXPECT_EQ(reply.error().code, ECONNRESET);
          break;
        }
        continue;
      }
      ASSERT_TRUE(reply.has_value()) << reply.error().Describe();
      Header sent_header;
      std::memcpy(&sent_header, frame.bytes.data(), sizeof(sent_header));
      EXPECT_EQ(reply->header.msg_id, sent_header.msg_id);
      EXPECT_EQ(reply->header.command, sent_header.command);
      EXPECT_EQ(RawPeer::ErrorOf(*reply), frame.error)
          << CommandName(sent_header.command) << ": got " << ErrnoName(RawPeer::ErrorOf(*reply))
          << ", want " << ErrnoName(frame.error);
    }
  }
  // The client is gone: everything it held is released, and every device
  // serves a fresh client.
  ServeEveryDevice();
  EXPECT_EQ(account_->used(), 0u) << "locked memory left behind";
  EXPECT_EQ(OpenFdCount(), baseline_fds_) << "descriptors left behind";
}

INSTANTIATE_TEST_SUITE_P(Hostile, HostileClientTest, ::testing::ValuesIn(AllHostileCases()),
                         [](const ::testing::TestParamInfo<HostileCase>& param) {
                           return param.param.name;
                         });

TEST(HostileCasesTest, TheSuiteHasAtLeast250NamedCases) {
  const auto cases = AllHostileCases();
  EXPECT_GE(cases.size(), 250u);
  std::set<std::string> names;
  for (const auto& test : cases) EXPECT_TRUE(names.insert(test.name).second) << test.name;
}

}  // namespace
}  // namespace umdev::vfio_user::testing
