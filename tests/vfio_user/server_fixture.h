// ServerTest: a registry with the type1 backend, a test parent with one
// instance, and a vfio-user server serving it from a temporary directory.
#pragma once

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <filesystem>
#include <memory>

#include "fakes/test_parent.h"
#include "raw_peer.h"
#include "umdev/pinning/type1_driver.h"
#include "umdev/vfio_user/server.h"

namespace umdev::vfio_user::testing {

inline size_t OpenFdCount() {
  size_t count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++count;
  }
  return count;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("umdev-vu-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(dir_);
    registry_ = std::make_unique<Registry>(RegistryOptions{
        .removal_bound = std::chrono::milliseconds(200),
        .request_interval = std::chrono::milliseconds(50)});
    account_ = std::make_shared<pinning::LockedMemoryAccount>(64ull << 20);
    ASSERT_TRUE(registry_->iommu_drivers().Register(
        std::make_shared<pinning::Type1Driver>(account_)));
    parent_ = std::make_shared<umdev::testing::TestParentDriver>(
        umdev::testing::TestParentDriver::Options{});
    ASSERT_TRUE(registry_->RegisterParent(parent_));
    ServerOptions options;
    options.socket_dir = (dir_ / "vfio-user").string();
    options.message_timeout = message_timeout_;
    options.threads = threads_;
    options.max_msg_fds = 4;
    options.max_data_xfer_size = 64 * 1024;
    options.identify = identify_;
    server_ = std::make_unique<Server>(*registry_, options);
    ASSERT_TRUE(server_->Start());
    uuid_ = Uuid::Generate();
    ASSERT_TRUE(registry_->CreateMdev("test_parent", "test-a", uuid_));
  }

  void TearDown() override {
    server_->Stop();
    server_.reset();
    registry_.reset();
    std::filesystem::remove_all(dir_);
  }

  RawPeer Connect() {
    auto peer = RawPeer::Connect(server_->SocketPath(uuid_));
    EXPECT_TRUE(peer.has_value()) << peer.error().Describe();
    return std::move(*peer);
  }

  RawPeer ConnectAndNegotiate() {
    RawPeer peer = Connect();
    Message reply = peer.Negotiate();
    EXPECT_EQ(RawPeer::ErrorOf(reply), 0);
    return peer;
  }

  umdev::testing::TestDevice* device() { return parent_->device(uuid_); }

  // A memfd of |size| bytes, as QEMU's shared guest RAM.
  static UniqueFd GuestMemory(size_t size) {
    UniqueFd fd(::memfd_create("guest", MFD_CLOEXEC));
    EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
    return fd;
  }

  std::chrono::milliseconds message_timeout_{2000};
  kvm::IdentifyOptions identify_;
  unsigned threads_ = 2;
  std::filesystem::path dir_;
  std::shared_ptr<pinning::LockedMemoryAccount> account_;
  std::unique_ptr<Registry> registry_;
  std::shared_ptr<umdev::testing::TestParentDriver> parent_;
  std::unique_ptr<Server> server_;
  Uuid uuid_;
  static inline int counter_ = 0;
};

}  // namespace umdev::vfio_user::testing
