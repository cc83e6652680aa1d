// More devices than the common soft descriptor limit of 1024 allows (each
// costs one descriptor while idle), in one real umdevd started under that
// limit: the daemon raises its limit, every device is served (its
// socket exists and a vfio-user client negotiates on a sample), and
// removing them all returns every descriptor. scale_bench measures the
// same daemon; this only checks that it works.
#include <sys/resource.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "e2e/umdevd_process.h"
#include "umdev/common/uuid.h"
#include "umdev/control/client.h"
#include "umdev/vfio_user/client.h"

namespace umdev::test {
namespace {

constexpr int kDevices = 1100;

size_t OpenDescriptors(pid_t pid) {
  size_t count = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    ++count;
  }
  return count;
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
  const size_t idle_fds = OpenDescriptors(daemon->pid());
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
  EXPECT_GT(OpenDescriptors(daemon->pid()), 1024u);  // Past the soft limit it started with.

  for (const std::string& uuid : uuids) ASSERT_TRUE(client->Call({{"cmd", "stop"}, {"uuid", uuid}}).has_value());
  EXPECT_TRUE(client->Call({{"cmd", "list"}}).value()["mdevs"].empty());
  // The sample clients are gone too; allow the daemon a moment to see that.
  for (int i = 0; i < 100 && OpenDescriptors(daemon->pid()) > idle_fds; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(OpenDescriptors(daemon->pid()), idle_fds);
  EXPECT_EQ(daemon->Stop(), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace umdev::test
