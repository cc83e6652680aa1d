// mtty's pty and socket far ends: bytes both ways through the device's line
// thread, back-pressure instead of overruns, one socket client at a time.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "mtty_test_util.h"
#include "umdev/common/unix_address.h"

namespace umdev::vendor::serial {
namespace {

using namespace testing;  // NOLINT: the test helpers.

// Bounded polling for a condition another thread brings about.
bool WaitFor(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return condition();
}

// Reads what the guest would: every byte that arrives in RBR, until |n|.
std::string GuestRead(DeviceOps& ops, size_t n) {
  std::string got;
  WaitFor([&] {
    while ((ReadReg(ops, 0, reg::kLsr) & lsr::kDataReady) != 0) {
      got += static_cast<char>(ReadReg(ops, 0, reg::kRbrThr));
    }
    return got.size() >= n;
  });
  return got;
}

// Reads from a host fd until |n| bytes came or time ran out.
std::string HostRead(int fd, size_t n) {
  std::string got;
  WaitFor([&] {
    char buffer[256];
    const ssize_t r = ::read(fd, buffer, sizeof(buffer));
    if (r > 0) got.append(buffer, static_cast<size_t>(r));
    return got.size() >= n;
  });
  return got;
}

class MttyLinesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/mtty_lines_XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    auto ops = Probe(*parent_, "1", dma_);
    ASSERT_TRUE(ops.has_value());
    ops_ = std::move(*ops);
  }
  void TearDown() override {
    ops_.reset();
    std::filesystem::remove_all(dir_);
  }
  UniqueFd OpenPty() {
    const std::string path = *ops_->ReadAttribute("pty");
    return UniqueFd(::open(path.c_str(), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC));
  }
  UniqueFd Connect(const std::string& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    const sockaddr_un address = UnixAddress(path).value();
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)), 0);
    return fd;
  }

  std::shared_ptr<MttyParent> parent_ = MttyParent::Create().value();
  NoDma dma_;
  std::unique_ptr<DeviceOps> ops_;
  std::string dir_;
};

TEST_F(MttyLinesTest, PtyCarriesBytesBothWays) {
  ASSERT_TRUE(ops_->WriteAttribute("far_end", "pty"));
  UniqueFd pty = OpenPty();
  ASSERT_TRUE(pty.valid());
  ASSERT_TRUE(ops_->Open({}));
  WriteReg(*ops_, 0, reg::kIirFcr, fcr::kEnable);
  ASSERT_EQ(::write(pty.get(), "hello", 5), 5);
  EXPECT_EQ(GuestRead(*ops_, 5), "hello");
  for (char c : std::string("guest\r\n")) WriteReg(*ops_, 0, reg::kRbrThr, static_cast<uint8_t>(c));
  EXPECT_EQ(HostRead(pty.get(), 7), "guest\r\n") << "raw mode: bytes pass unchanged";
  ops_->Close();
}

TEST_F(MttyLinesTest, PtyInputRaisesRxInterrupt) {
  ASSERT_TRUE(ops_->WriteAttribute("far_end", "pty"));
  UniqueFd pty = OpenPty();
  ASSERT_TRUE(ops_->Open({}));
  Efd trigger;
  ASSERT_TRUE(ApplyIrqs(*ops_, EventfdSet(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER,
                                          trigger.Dup())));
  WriteReg(*ops_, 0, reg::kIirFcr, fcr::kEnable | 0xc0);  // Trigger 14: timeout delivers 1 byte.
  WriteReg(*ops_, 0, reg::kIer, ier::kRxData);
  ASSERT_EQ(::write(pty.get(), "x", 1), 1);
  EXPECT_TRUE(WaitFor([&] { return trigger.Take() == 1; }));
  EXPECT_EQ(ReadReg(*ops_, 0, reg::kIirFcr), iir::kFifoEnabled | iir::kRxTimeout);
  EXPECT_EQ(ReadReg(*ops_, 0, reg::kRbrThr), 'x');
  ops_->Close();
}

// More input than the FIFO holds waits in the pty instead of overrunning.
TEST_F(MttyLinesTest, PtyBackPressureLosesNothing) {
  ASSERT_TRUE(ops_->WriteAttribute("far_end", "pty"));
  UniqueFd pty = OpenPty();
  ASSERT_TRUE(ops_->Open({}));
  WriteReg(*ops_, 0, reg::kIirFcr, fcr::kEnable);
  std::string sent;
  for (int i = 0; i < 200; ++i) sent += static_cast<char>('A' + i % 26);
  ASSERT_EQ(::write(pty.get(), sent.data(), sent.size()), static_cast<ssize_t>(sent.size()));
  ASSERT_TRUE(WaitFor([&] { return (ReadReg(*ops_, 0, reg::kLsr) & lsr::kDataReady) != 0; }));
  std::string got;
  bool overrun = false;
  WaitFor([&] {
    const uint8_t status = ReadReg(*ops_, 0, reg::kLsr);
    overrun = overrun || (status & lsr::kOverrun) != 0;
    if ((status & lsr::kDataReady) != 0) got += static_cast<char>(ReadReg(*ops_, 0, reg::kRbrThr));
    return got.size() >= sent.size();
  });
  EXPECT_EQ(got, sent);
  EXPECT_FALSE(overrun);
  ops_->Close();
}

TEST_F(MttyLinesTest, PtyChangesOnlyWhileClosed) {
  ASSERT_TRUE(ops_->WriteAttribute("far_end", "pty"));
  const std::string first = *ops_->ReadAttribute("pty");
  ASSERT_TRUE(ops_->Open({}));
  EXPECT_EQ(Errno(ops_->WriteAttribute("far_end", "loopback")), EBUSY);
  ops_->Close();
  ASSERT_TRUE(ops_->WriteAttribute("far_end", "pty"));  // Same value: kept.
  EXPECT_EQ(*ops_->ReadAttribute("pty"), first);
  ASSERT_TRUE(ops_->WriteAttribute("far_end", "loopback"));
  EXPECT_EQ(*ops_->ReadAttribute("pty"), "");
}

TEST_F(MttyLinesTest, SocketCarriesBytesAndDrivesCarrier) {
  const std::string path = dir_ + "/port.sock";
  ASSERT_TRUE(ops_->WriteAttribute("far_end", "socket:" + path));
  EXPECT_EQ(*ops_->ReadAttribute("far_end"), "socket:" + path);
  ASSERT_TRUE(ops_->Open({}));
  WriteReg(*ops_, 0, reg::kIirFcr, fcr::kEnable);
  EXPECT_EQ(ReadReg(*ops_, 0, reg::kMsr) & msr::kDcd, 0) << "no client: no carrier";
  UniqueFd client = Connect(path);
  EXPECT_TRUE(WaitFor([&] { return (ReadReg(*ops_, 0, reg::kMsr) & msr::kDcd) != 0; }));
  ASSERT_EQ(::write(client.get(), "ping", 4), 4);
  EXPECT_EQ(GuestRead(*ops_, 4), "ping");
  for (char c : std::string("pong")) WriteReg(*ops_, 0, reg::kRbrThr, static_cast<uint8_t>(c));
  EXPECT_EQ(HostRead(client.get(), 4), "pong");

  // A second client is turned away while the first is connected.
  UniqueFd second = Connect(path);
  char byte = 0;
  EXPECT_TRUE(WaitFor([&] { return ::read(second.get(), &byte, 1) == 0; }));

  client.Reset();
  EXPECT_TRUE(WaitFor([&] { return (ReadReg(*ops_, 0, reg::kMsr) & msr::kDcd) == 0; }));
  UniqueFd again = Connect(path);
  EXPECT_TRUE(WaitFor([&] { return (ReadReg(*ops_, 0, reg::kMsr) & msr::kDcd) != 0; }));
  ops_->Close();
}

TEST_F(MttyLinesTest, SocketPathIsRemovedWithTheFarEnd) {
  const std::string path = dir_ + "/gone.sock";
  ASSERT_TRUE(ops_->WriteAttribute("far_end", "socket:" + path));
  EXPECT_TRUE(std::filesystem::exists(path));
  ASSERT_TRUE(ops_->WriteAttribute("far_end", "loopback"));
  EXPECT_FALSE(std::filesystem::exists(path));
  const std::string file = dir_ + "/plain";
  { std::ofstream(file) << "x"; }
  EXPECT_EQ(Errno(ops_->WriteAttribute("far_end", "socket:" + file)), EADDRINUSE);
  EXPECT_EQ(*ops_->ReadAttribute("far_end"), "loopback") << "a failed change keeps the old end";
}

TEST_F(MttyLinesTest, StoppedDeviceHoldsInputInThePty) {
  ASSERT_TRUE(ops_->WriteAttribute("far_end", "pty"));
  UniqueFd pty = OpenPty();
  ASSERT_TRUE(ops_->Open({}));
  WriteReg(*ops_, 0, reg::kIirFcr, fcr::kEnable);
  MigrationOps& mig = *ops_->migration();
  ASSERT_TRUE(mig.SetState(VFIO_DEVICE_STATE_RUNNING_P2P));
  ASSERT_TRUE(mig.SetState(VFIO_DEVICE_STATE_STOP));
  ASSERT_EQ(::write(pty.get(), "late", 4), 4);
  // Nothing to wait for but time: the stopped device must not take the bytes.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(ReadReg(*ops_, 0, reg::kLsr) & lsr::kDataReady, 0);
  ASSERT_TRUE(mig.SetState(VFIO_DEVICE_STATE_RUNNING_P2P));
  EXPECT_EQ(GuestRead(*ops_, 4), "late");
  ops_->Close();
}

}  // namespace
}  // namespace umdev::vendor::serial
