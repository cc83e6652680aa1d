// busy_poll_us: the thread serving a device's client keeps polling after a
// message for the device's budget, then sleeps; a change applies to the
// next message, and 0 (the default) sleeps at once.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "server_fixture.h"

namespace umdev::vfio_user::testing {
namespace {

using namespace std::chrono_literals;

// The tid of this process's thread named |name|, if any.
std::optional<std::string> ThreadNamed(const std::string& name) {
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string line;
    if (std::getline(comm, line) && line == name) return task.path().filename().string();
  }
  return std::nullopt;
}

// The scheduler state letter of thread |tid| ('R' running or runnable, 'S'
// sleeping), from the field after the parenthesised name.
char ThreadState(const std::string& tid) {
  std::ifstream stat("/proc/self/task/" + tid + "/stat");
  std::string text;
  std::getline(stat, text);
  const size_t close = text.rfind(')');
  return close == std::string::npos || close + 2 >= text.size() ? '?' : text[close + 2];
}

// Whether the thread is seen running at least once in |samples| looks over
// |window| (polling never sleeps, so a poller is 'R' whenever looked at
// unless the host preempted it, which 20 looks do not all meet).
bool SeenRunning(const std::string& tid, std::chrono::milliseconds window, int samples = 20) {
  for (int i = 0; i < samples; ++i) {
    if (ThreadState(tid) == 'R') return true;
    std::this_thread::sleep_for(window / samples);
  }
  return false;
}

bool SeenAlwaysSleeping(const std::string& tid, int samples = 10) {
  for (int i = 0; i < samples; ++i) {
    if (ThreadState(tid) != 'S') return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

class ServerBusyPollTest : public ServerTest {
 protected:
  std::string ClientThread() {
    const std::string name = "vfu-" + uuid_.ToString().substr(0, 8);
    for (int i = 0; i < 200; ++i) {
      if (auto tid = ThreadNamed(name)) return *tid;
      std::this_thread::sleep_for(5ms);
    }
    ADD_FAILURE() << "no thread " << name;
    return "0";
  }
  void Ping(RawPeer& peer) {
    Message reply = peer.Call(Command::kDeviceGetInfo, Payload(DeviceInfoPayload{16, 0, 0, 0}));
    ASSERT_EQ(RawPeer::ErrorOf(reply), 0);
  }
};

TEST_F(ServerBusyPollTest, WithoutABudgetTheClientsThreadSleepsBetweenMessages) {
  EXPECT_EQ(*registry_->ReadMdevAttribute(uuid_, "busy_poll_us"), "0");
  RawPeer peer = ConnectAndNegotiate();
  const std::string tid = ClientThread();
  Ping(peer);
  std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(SeenAlwaysSleeping(tid));
}

TEST_F(ServerBusyPollTest, TheThreadPollsForTheBudgetThenSleepsAndAChangeApplies) {
  ASSERT_TRUE(registry_->WriteMdevAttribute(uuid_, "busy_poll_us", "100000"));
  RawPeer peer = ConnectAndNegotiate();
  const std::string tid = ClientThread();
  Ping(peer);
  EXPECT_TRUE(SeenRunning(tid, 60ms)) << "not polling right after a message";
  std::this_thread::sleep_for(250ms);
  EXPECT_TRUE(SeenAlwaysSleeping(tid)) << "still polling past the budget";
  // Polling again after the next message, and messages are served meanwhile.
  for (int i = 0; i < 50; ++i) Ping(peer);
  EXPECT_TRUE(SeenRunning(tid, 60ms));
  // Turned off while polling: the thread sleeps at its next look.
  ASSERT_TRUE(registry_->WriteMdevAttribute(uuid_, "busy_poll_us", "0"));
  std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(SeenAlwaysSleeping(tid));
  Ping(peer);
}

}  // namespace
}  // namespace umdev::vfio_user::testing
