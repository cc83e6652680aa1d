// The server serves a bus driver's devices (Registry::RegisterDevice) as it
// serves mdevs: a socket named by the device's address, the device of that
// name opened in its real group, on the group's own IOMMU.
#include <sys/stat.h>

#include <cstdio>
#include <fstream>

#include "server_fixture.h"

namespace umdev::vfio_user::testing {
namespace {

class ServerBusDeviceTest : public ServerTest {
 protected:
  BusDeviceSpec Spec(const std::string& name, unsigned group) {
    BusDeviceSpec spec;
    spec.name = name;
    spec.driver = "passthrough";
    spec.iommu_group = group;
    spec.iommu_driver = group_iommu_;
    spec.probe = [](Device& device) -> Result<std::unique_ptr<DeviceOps>> {
      return std::make_unique<umdev::testing::TestDevice>(
          device, std::make_shared<umdev::testing::TestDevice::Counters>(), true, false, [] {});
    };
    return spec;
  }
  RawPeer ConnectTo(const std::string& name) {
    auto peer = RawPeer::Connect(server_->SocketPath(name));
    EXPECT_TRUE(peer.has_value()) << peer.error().Describe();
    return std::move(*peer);
  }

  std::shared_ptr<pinning::Type1Driver> group_iommu_ =
      std::make_shared<pinning::Type1Driver>(std::make_shared<pinning::LockedMemoryAccount>(1 << 20));
};

TEST_F(ServerBusDeviceTest, ABusDeviceGetsASocketNamedByItsAddressAndIsServed) {
  ASSERT_TRUE(registry_->RegisterDevice(Spec("0000:01:00.0", 40)).has_value());
  const std::string path = server_->SocketPath("0000:01:00.0");
  EXPECT_EQ(path, (dir_ / "vfio-user" / "0000:01:00.0.sock").string());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));

  RawPeer peer = ConnectTo("0000:01:00.0");
  ASSERT_EQ(RawPeer::ErrorOf(peer.Negotiate()), 0);
  Message reply = peer.Call(Command::kDeviceGetInfo, Payload(DeviceInfoPayload{16, 0, 0, 0}));
  ASSERT_EQ(RawPeer::ErrorOf(reply), 0);
  auto info = LoadPayload<DeviceInfoPayload>(reply.payload);
  ASSERT_TRUE(info.has_value());
  EXPECT_TRUE(info->flags & VFIO_DEVICE_FLAGS_PCI);
  EXPECT_TRUE(registry_->BusDevices().front().open);
  // The mdev beside it is served as before.
  RawPeer mdev = ConnectAndNegotiate();
  EXPECT_EQ(RawPeer::ErrorOf(mdev.Call(Command::kDeviceGetInfo,
                                       Payload(DeviceInfoPayload{16, 0, 0, 0}))),
            0);

  ASSERT_TRUE(registry_->UnregisterDevice("0000:01:00.0").has_value());
  EXPECT_NE(::stat(path.c_str(), &st), 0) << "the socket goes with the device";
}

// The devices of one group used by one client share the group's file and
// container (QEMU connects each device's socket); another client is
// refused while one holds the group.
TEST_F(ServerBusDeviceTest, OneClientUsesEveryDeviceOfASharedGroup) {
  for (const char* address : {"0000:02:00.0", "0000:02:00.1", "0000:02:00.2"}) {
    ASSERT_TRUE(registry_->RegisterDevice(Spec(address, 41)).has_value());
  }
  RawPeer second = ConnectTo("0000:02:00.1");
  ASSERT_EQ(RawPeer::ErrorOf(second.Negotiate()), 0);
  RawPeer first = ConnectTo("0000:02:00.0");
  ASSERT_EQ(RawPeer::ErrorOf(first.Negotiate()), 0) << "the same client: the group is shared";
  const auto devices = registry_->BusDevices();
  ASSERT_EQ(devices.size(), 3u);
  EXPECT_TRUE(devices[0].open);
  EXPECT_TRUE(devices[1].open);
  EXPECT_FALSE(devices[2].open);
  // The same guest RAM mapped through both sessions, as QEMU does.
  UniqueFd ram = GuestMemory(1 << 20);
  DmaMapPayload map{sizeof(DmaMapPayload), kProtRead | kProtWrite, 0, 0x100000, 1 << 20};
  const int fd = ram.get();
  EXPECT_EQ(RawPeer::ErrorOf(second.Call(Command::kDmaMap, Payload(map), std::span(&fd, 1))), 0);
  EXPECT_EQ(RawPeer::ErrorOf(first.Call(Command::kDmaMap, Payload(map), std::span(&fd, 1))), 0);

  // Another process (umdev-probe) may not take the group's third device
  // meanwhile: the endpoint answers its VERSION with EBUSY.
  FILE* other = ::popen((std::string(UMDEV_PROBE) + " --socket " +
                         server_->SocketPath("0000:02:00.2") + " info 2>&1")
                            .c_str(),
                        "r");
  ASSERT_NE(other, nullptr);
  std::string said;
  char buffer[256];
  while (size_t got = std::fread(buffer, 1, sizeof(buffer), other)) said.append(buffer, got);
  const int status = ::pclose(other);
  EXPECT_NE(status, 0) << said;
  EXPECT_NE(said.find("EBUSY"), std::string::npos) << said;
  EXPECT_FALSE(registry_->BusDevices()[2].open);
}

TEST_F(ServerBusDeviceTest, AStalePciSocketIsRemovedAtStart) {
  server_->Stop();
  const auto stale = dir_ / "vfio-user" / "0000:03:00.0.sock";
  { std::ofstream(stale.string()) << ""; }
  const auto other = dir_ / "vfio-user" / "notes.sock";
  { std::ofstream(other.string()) << ""; }
  ServerOptions options;
  options.socket_dir = (dir_ / "vfio-user").string();
  Server again(*registry_, options);
  ASSERT_TRUE(again.Start());
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_TRUE(std::filesystem::exists(other)) << "only what names a device is ours";
  again.Stop();
}

}  // namespace
}  // namespace umdev::vfio_user::testing
