// More devices than the common soft descriptor limit of 1024 allows (each
// costs one descriptor while idle), in one real umdevd started under that
// limit: the daemon raises its limit, every device is served (its
// socket exists and a vfio-user client negotiates on a sample), and
// removing them all returns every descriptor. scale_bench measures the
// same daemon; this only checks that it works.
#include <sys/resource.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include "e2e/umdevd_process.h"
#include "umdev/common/uuid.h"
#include "umdev/control/client.h"
#include "umdev/vfio_user/client.h"

namespace umdev::test {
namespace {

constexpr int kDevices = 1100;

// What the daemon has open: descriptor number -> what it is.
std::map<std::string, std::string> OpenDescriptors(pid_t pid) {
  std::map<std::string, std::string> open;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    open[entry.path().filename().string()] = std::filesystem::read_symlink(entry.path(), ec).string();
  }
  return open;
}

std::string Describe(const std::map<std::string, std::string>& open) {
  std::string text;
  for (const auto& [fd, target] : open) text += fd + " -> " + target + "\n";
  return text;
}

// Waits (up to 5 s) until the daemon holds |count| descriptors: clients
// that went away are seen by its loops a moment later.
std::map<std::string, std::string> SettleAt(pid_t pid, size_t count) {
  auto open = OpenDescriptors(pid);
  for (int i = 0; i < 250 && open.size() != count; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    open = OpenDescriptors(pid);
  }
  return open;
}

TEST(ScaleTest, MoreDevicesThanTheCommonSoftFdLimitAllows) {
  const auto dir = std::filesystem::temp_directory_path() / ("umdev-scale-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  if (saved.rlim_max < 2 * kDevices) GTEST_SKIP() << "hard descriptor limit " << saved.rlim_max;
  rlimit soft = saved;
  soft.rlim_cur = 1024;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &soft), 0);
  auto daemon = UmdevdProcess::Start(UMDEVD, dir, R"({"parents":[{"driver":"mtty","ports":1100}]})", {}, "info");
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  ASSERT_TRUE(daemon.has_value()) << daemon.error().Describe();
  EXPECT_NE(daemon->Log().find("descriptor limit " + std::to_string(saved.rlim_max)), std::string::npos)
      << daemon->Log();

  auto client = control::ControlClient::Connect((daemon->state_dir() / "control.sock").string());
  ASSERT_TRUE(client.has_value());
  // One device made, used and removed first: what the daemon opens once,
  // on its first device or client, is not a device's cost.
  const std::string warm_up = Uuid::Generate().ToString();
  ASSERT_TRUE(client->Call({{"cmd", "start"}, {"parent", "mtty"}, {"type", "mtty-1"}, {"uuid", warm_up}}));
  ASSERT_TRUE(vfio_user::Client::Connect(daemon->SocketOf(warm_up).string()).has_value());
  ASSERT_TRUE(client->Call({{"cmd", "stop"}, {"uuid", warm_up}}).has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto idle = OpenDescriptors(daemon->pid());
  std::vector<std::string> uuids;
  for (int i = 0; i < kDevices; ++i) {
    uuids.push_back(Uuid::Generate().ToString());
    auto started = client->Call({{"cmd", "start"}, {"parent", "mtty"}, {"type", "mtty-1"}, {"uuid", uuids.back()}});
    ASSERT_TRUE(started.has_value()) << i << ": " << started.error().Describe();
  }
  EXPECT_EQ(client->Call({{"cmd", "list"}}).value()["mdevs"].size(), static_cast<size_t>(kDevices));
  for (const std::string& uuid : uuids) ASSERT_TRUE(std::filesystem::is_socket(daemon->SocketOf(uuid))) << uuid;
  for (size_t i : {size_t{0}, uuids.size() / 2, uuids.size() - 1}) {
    auto device = vfio_user::Client::Connect(daemon->SocketOf(uuids[i]).string());
    EXPECT_TRUE(device.has_value()) << device.error().Describe();
  }
  EXPECT_GT(OpenDescriptors(daemon->pid()).size(), 1024u);  // Past the soft limit it started with.

  for (const std::string& uuid : uuids) ASSERT_TRUE(client->Call({{"cmd", "stop"}, {"uuid", uuid}}).has_value());
  EXPECT_TRUE(client->Call({{"cmd", "list"}}).value()["mdevs"].empty());
  const auto after = SettleAt(daemon->pid(), idle.size());
  EXPECT_EQ(after.size(), idle.size()) << "before:\n" << Describe(idle) << "after:\n" << Describe(after);
  EXPECT_EQ(daemon->Stop(), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace umdev::test
