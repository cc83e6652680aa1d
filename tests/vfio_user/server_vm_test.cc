// The server's side of the kvm association: every client is identified, its
// VM latched by the device, the type's VM policy and the instance's binding
// enforced with the kernel's errnos, and the session tied to the lifetime of
// the VM process rather than to its socket.
#include <sys/mman.h>

#include <thread>

#include "kvm/vm_helper.h"
#include "server_fixture.h"

namespace umdev::vfio_user::testing {
namespace {

using ::umdev::testing::CanCreateKvmVm;
using ::umdev::testing::TestParentDriver;
using ::umdev::testing::VmHelper;
using ::umdev::testing::VmHelperOptions;

constexpr const char* kVmUuidA = "aaaaaaaa-1111-4222-8333-444444444444";
constexpr const char* kVmUuidB = "bbbbbbbb-1111-4222-8333-444444444444";

class ServerVmTest : public ServerTest {
 protected:
  // A second parent whose types carry |policy|; returns an instance of it.
  Uuid AddPolicyInstance(VmPolicy policy) {
    if (policy_parent_ == nullptr) {
      TestParentDriver::Options options;
      options.parent_name = "vm_parent";
      options.driver_name = "vmtest";
      options.types = {{"a", "", "", policy}};
      policy_parent_ = std::make_shared<TestParentDriver>(options);
      EXPECT_TRUE(registry_->RegisterParent(policy_parent_));
    }
    const Uuid uuid = Uuid::Generate();
    EXPECT_TRUE(registry_->CreateMdev("vm_parent", "vmtest-a", uuid));
    return uuid;
  }

  // A stand-in VMM connected to |uuids|' sockets; the connections are ours.
  VmHelper SpawnVm(VmHelperOptions options, const std::vector<Uuid>& uuids) {
    for (const Uuid& uuid : uuids) options.connect.push_back(server_->SocketPath(uuid));
    auto helper = VmHelper::Spawn(options);
    EXPECT_TRUE(helper.has_value()) << helper.error().Describe();
    return std::move(*helper);
  }

  std::string Attr(const Uuid& uuid, const char* name) {
    return registry_->ReadMdevAttribute(uuid, name).value_or("?");
  }

  bool WaitDisconnected(const Uuid& uuid) {
    for (int i = 0; i < 500 && server_->IsConnected(uuid); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return !server_->IsConnected(uuid);
  }

  std::shared_ptr<TestParentDriver> policy_parent_;
};

TEST_F(ServerVmTest, AKvmClientIsLatchedWithItsIdentityUntilItLeaves) {
  if (!CanCreateKvmVm()) GTEST_SKIP() << "this host cannot create a KVM VM";
  VmHelper vm = SpawnVm({.name = "web-1", .uuid = kVmUuidA, .create_kvm_vm = true}, {uuid_});
  RawPeer peer = RawPeer::Adopt(std::move(vm.sockets()[0]));
  ASSERT_EQ(RawPeer::ErrorOf(peer.Negotiate()), 0);
  EXPECT_EQ(Attr(uuid_, "vm_accel"), "kvm");
  EXPECT_EQ(Attr(uuid_, "vm_pid"), std::to_string(vm.pid()));
  EXPECT_EQ(Attr(uuid_, "vm_name"), "web-1");
  EXPECT_EQ(Attr(uuid_, "vm_uuid"), kVmUuidA);
  auto status = registry_->FindMdev(uuid_);
  ASSERT_TRUE(status.has_value() && status->vm.has_value());
  EXPECT_EQ(status->vm->pid, vm.pid());
  // The vendor was given the same VM at open.
  const std::shared_ptr<const Vm> given = device()->opened_vm();
  ASSERT_TRUE(given != nullptr);
  EXPECT_EQ(given.get() != nullptr ? given->identity().accel : "", "kvm");
  ASSERT_EQ(::shutdown(peer.fd(), SHUT_RDWR), 0);  // Hang up.
  ASSERT_TRUE(WaitDisconnected(uuid_));
  EXPECT_EQ(Attr(uuid_, "vm_accel"), "");
}

TEST_F(ServerVmTest, RequiresVmRefusesAClientThatIsNotAVmWithEsrchThenServesAVm) {
  const Uuid uuid = AddPolicyInstance({.requires_vm = true});
  auto peer = RawPeer::Connect(server_->SocketPath(uuid));  // This test process: no VM.
  ASSERT_TRUE(peer.has_value());
  EXPECT_EQ(RawPeer::ErrorOf(peer->Negotiate()), ESRCH);
  EXPECT_TRUE(peer->ClosedByServer());
  EXPECT_EQ(policy_parent_->counters()->opens, 0);
  ASSERT_TRUE(WaitDisconnected(uuid));
  // A QEMU (TCG: no VM fd) is a VM.
  VmHelper vm = SpawnVm({.name = "tcg-guest"}, {uuid});
  RawPeer attached = RawPeer::Adopt(std::move(vm.sockets()[0]));
  EXPECT_EQ(RawPeer::ErrorOf(attached.Negotiate()), 0);
  EXPECT_EQ(Attr(uuid, "vm_accel"), "tcg");
}

TEST_F(ServerVmTest, OnePerVmRefusesTheSameVmsSecondInstanceWithEexist) {
  const Uuid first = AddPolicyInstance({.one_per_vm = true});
  const Uuid second = AddPolicyInstance({.one_per_vm = true});
  VmHelper vm = SpawnVm({.name = "greedy"}, {first, second});
  // Both connections attach at once, each on its own thread: whichever
  // opens its device first keeps it, the other is refused.
  RawPeer a = RawPeer::Adopt(std::move(vm.sockets()[0]));
  RawPeer b = RawPeer::Adopt(std::move(vm.sockets()[1]));
  const int error_a = RawPeer::ErrorOf(a.Negotiate());
  const int error_b = RawPeer::ErrorOf(b.Negotiate());
  ASSERT_EQ(std::min(error_a, error_b), 0);
  ASSERT_EQ(std::max(error_a, error_b), EEXIST);
  const Uuid refused = error_a == 0 ? second : first;
  // Another VM may take the refused instance.
  ASSERT_TRUE(WaitDisconnected(refused));
  VmHelper other = SpawnVm({.name = "other"}, {refused});
  RawPeer c = RawPeer::Adopt(std::move(other.sockets()[0]));
  EXPECT_EQ(RawPeer::ErrorOf(c.Negotiate()), 0);
}

TEST_F(ServerVmTest, BoundVmUuidRefusesAnotherVmWithEpermAndAdmitsItsOwn) {
  ASSERT_TRUE(registry_->WriteMdevAttribute(uuid_, "bound_vm_uuid", kVmUuidA));
  {
    VmHelper wrong = SpawnVm({.name = "intruder", .uuid = kVmUuidB}, {uuid_});
    RawPeer peer = RawPeer::Adopt(std::move(wrong.sockets()[0]));
    EXPECT_EQ(RawPeer::ErrorOf(peer.Negotiate()), EPERM);
    EXPECT_TRUE(peer.ClosedByServer());
  }
  ASSERT_TRUE(WaitDisconnected(uuid_));
  VmHelper right = SpawnVm({.name = "owner", .uuid = kVmUuidA}, {uuid_});
  RawPeer peer = RawPeer::Adopt(std::move(right.sockets()[0]));
  EXPECT_EQ(RawPeer::ErrorOf(peer.Negotiate()), 0);
  EXPECT_EQ(Attr(uuid_, "vm_name"), "owner");
}

TEST_F(ServerVmTest, TheVmExitingEndsItsSessionWhileAnotherProcessHoldsTheSocket) {
  VmHelper vm = SpawnVm({.name = "doomed"}, {uuid_});
  // This process holds the socket, as a child that inherited it would.
  RawPeer peer = RawPeer::Adopt(std::move(vm.sockets()[0]));
  ASSERT_EQ(RawPeer::ErrorOf(peer.Negotiate()), 0);
  UniqueFd memory = GuestMemory(0x10000);
  const int fds[] = {memory.get()};
  ASSERT_EQ(RawPeer::ErrorOf(peer.Call(Command::kDmaMap,
                                       Payload(DmaMapPayload{32, kProtRead | kProtWrite, 0,
                                                             0x100000, 0x10000}),
                                       fds)),
            0);
  ASSERT_TRUE(device()->PinAndHold(0x100000, 4, kProtRead | kProtWrite));
  EXPECT_EQ(account_->used(), 4u * 4096);
  vm.Kill();
  ASSERT_TRUE(WaitDisconnected(uuid_)) << "the session outlived its VM";
  EXPECT_EQ(account_->used(), 0u);
  EXPECT_EQ(parent_->counters()->closes, 1);
  EXPECT_TRUE(peer.ClosedByServer());
  // The device is free for the next client at once.
  RawPeer next = ConnectAndNegotiate();
  EXPECT_EQ(Attr(uuid_, "vm_accel"), "none");
}

// The refusal reads the client's first message itself: a client that sends
// garbage instead (an absurd size, a header too short to frame) is closed
// within the refusal's bound, and the server serves other devices meanwhile.
TEST_F(ServerVmTest, ARefusedClientSendingGarbageIsClosedWithinABound) {
  const Uuid uuid = AddPolicyInstance({.requires_vm = true});
  for (const uint32_t size : {1u << 30, 3u}) {
    auto peer = RawPeer::Connect(server_->SocketPath(uuid));
    ASSERT_TRUE(peer.has_value());
    const Header header{.msg_id = 7, .command = 1, .msg_size = size, .flags = 0, .error_no = 0};
    ASSERT_EQ(::send(peer->fd(), &header, sizeof(header), MSG_NOSIGNAL),
              static_cast<ssize_t>(sizeof(header)));
    const auto start = std::chrono::steady_clock::now();
    auto reply = peer->Receive(std::chrono::seconds(5));
    EXPECT_FALSE(reply.has_value()) << "garbage was answered";
    EXPECT_EQ(reply.error().code, ECONNRESET) << reply.error().Describe();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
    RawPeer other = ConnectAndNegotiate();  // Another device, at once.
    EXPECT_EQ(RawPeer::ErrorOf(other.Call(Command::kDeviceReset, {})), 0);
    ASSERT_TRUE(WaitDisconnected(uuid));
  }
  EXPECT_EQ(policy_parent_->counters()->opens, 0);
}

class UnreadableProcServerTest : public ServerVmTest {
 protected:
  UnreadableProcServerTest() { identify_.proc_root = "/nonexistent"; }
};

// What cannot be read about a client (its /proc hidden, another uid without
// ptrace rights) degrades to unknown; the client is attached all the same.
TEST_F(UnreadableProcServerTest, AClientThatCannotBeIdentifiedIsAttachedAsUnknown) {
  RawPeer peer = ConnectAndNegotiate();
  EXPECT_EQ(Attr(uuid_, "vm_accel"), "unknown");
  EXPECT_EQ(Attr(uuid_, "vm_pid"), std::to_string(::getpid()));
  EXPECT_EQ(Attr(uuid_, "vm_name"), "");
}

}  // namespace
}  // namespace umdev::vfio_user::testing
