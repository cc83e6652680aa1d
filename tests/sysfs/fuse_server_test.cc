// FuseServer mounted in-process: what system calls on the mount return.
#include "umdev/sysfs/fuse_server.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "fakes/test_parent.h"
#include "umdev/common/unique_fd.h"

namespace umdev::sysfs {
namespace {

using ::umdev::testing::TestParentDriver;
using namespace std::chrono_literals;

constexpr std::string_view kUuid = "11111111-1111-4111-8111-111111111111";
constexpr std::string_view kTypeA = "class/mdev_bus/test_parent/mdev_supported_types/test-a";

bool IsMounted(const std::filesystem::path& path) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  for (std::string line; std::getline(mountinfo, line);) {
    std::istringstream fields(line);
    std::string id, parent, device, root, mountpoint;
    fields >> id >> parent >> device >> root >> mountpoint;
    if (mountpoint == path.string()) return true;
  }
  return false;
}

class FuseServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    UniqueFd fuse(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
    if (!fuse) {
      GTEST_SKIP() << "FUSE is not usable here: open /dev/fuse: " << std::strerror(errno);
    }
    TestParentDriver::Options options;
    options.features.attributes = true;
    ASSERT_TRUE(registry_.RegisterParent(std::make_shared<TestParentDriver>(options)).has_value());
    std::string pattern = (std::filesystem::temp_directory_path() / "umdev-fuse-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    server_.emplace(tree_, (dir_ / "sys").string());
    auto started = server_->Start();
    ASSERT_TRUE(started.has_value()) << started.error().Describe();
  }

  void TearDown() override {
    server_.reset();
    std::error_code ignored;
    if (!dir_.empty() && !IsMounted(dir_ / "sys")) std::filesystem::remove_all(dir_, ignored);
  }

  std::string PathOf(std::string_view relative) const { return (dir_ / "sys" / relative).string(); }

  // write() on a fresh descriptor; its errno, or 0 and the count written.
  std::pair<int, ssize_t> WriteFile(std::string_view relative, std::string_view data) const {
    UniqueFd fd(::open(PathOf(relative).c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return {errno, -1};
    const ssize_t n = ::write(fd.get(), data.data(), data.size());
    return {n < 0 ? errno : 0, n};
  }

  Registry registry_{RegistryOptions{.removal_bound = 300ms, .request_interval = 20ms}};
  Tree tree_{registry_};
  std::filesystem::path dir_;
  std::optional<FuseServer> server_;
};

TEST_F(FuseServerTest, MountsAndUnmounts) {
  EXPECT_TRUE(IsMounted(dir_ / "sys"));
  struct stat st {};
  ASSERT_EQ(::lstat(PathOf("class/mdev_bus/test_parent").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  ASSERT_EQ(::stat(PathOf(std::string(kTypeA) + "/create").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, S_IFREG | 0200);
  EXPECT_EQ(st.st_uid, ::geteuid());
  server_->Stop();
  EXPECT_FALSE(IsMounted(dir_ / "sys"));
  server_->Stop();  // Idempotent.
}

TEST_F(FuseServerTest, WriteErrnosAreTheTrees) {
  const std::string create = std::string(kTypeA) + "/create";
  EXPECT_EQ(WriteFile(create, "bad\n").first, EINVAL);
  EXPECT_EQ(WriteFile(create, std::string(kUuid) + "\n"), std::make_pair(0, ssize_t{37}));
  EXPECT_EQ(WriteFile(create, kUuid).first, EEXIST);
  EXPECT_EQ(registry_.Mdevs().size(), 1u);
}

TEST_F(FuseServerTest, OpeningAgainstTheModeIsEaccesForEveryone) {
  EXPECT_EQ(::open(PathOf(std::string(kTypeA) + "/create").c_str(), O_RDONLY | O_CLOEXEC), -1);
  EXPECT_EQ(errno, EACCES);
  EXPECT_EQ(::open(PathOf(std::string(kTypeA) + "/name").c_str(), O_WRONLY | O_CLOEXEC), -1);
  EXPECT_EQ(errno, EACCES);
  EXPECT_EQ(::open(PathOf(std::string(kTypeA) + "/name").c_str(), O_RDWR | O_CLOEXEC), -1);
  EXPECT_EQ(errno, EACCES);
}

TEST_F(FuseServerTest, ReadsAreLiveAndHonourTheOffset) {
  UniqueFd fd(::open(PathOf(std::string(kTypeA) + "/available_instances").c_str(),
                     O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  char buffer[16] = {};
  ASSERT_EQ(::pread(fd.get(), buffer, sizeof(buffer), 0), 2);
  EXPECT_EQ(std::string_view(buffer, 2), "4\n");
  ASSERT_TRUE(registry_.CreateMdev("test_parent", "test-a", Uuid::Generate()).has_value());
  // The same descriptor sees the new value: nothing is cached.
  ASSERT_EQ(::pread(fd.get(), buffer, sizeof(buffer), 0), 2);
  EXPECT_EQ(std::string_view(buffer, 2), "3\n");
  ASSERT_EQ(::pread(fd.get(), buffer, sizeof(buffer), 1), 1);
  EXPECT_EQ(buffer[0], '\n');
  EXPECT_EQ(::pread(fd.get(), buffer, sizeof(buffer), 2), 0);
}

TEST_F(FuseServerTest, AnAttributeOfARemovedInstanceIsEnodevOnAnOpenFile) {
  ASSERT_EQ(WriteFile(std::string(kTypeA) + "/create", kUuid).first, 0);
  const std::string dev = "bus/mdev/devices/" + std::string(kUuid);
  UniqueFd label(::open(PathOf(dev + "/label").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(label);
  ASSERT_TRUE(registry_.RemoveMdev(Uuid::Parse(kUuid).value()).has_value());
  char buffer[16];
  EXPECT_EQ(::pread(label.get(), buffer, sizeof(buffer), 0), -1);
  EXPECT_EQ(errno, ENODEV);
  EXPECT_EQ(::write(label.get(), "x", 1), -1);
  EXPECT_EQ(errno, ENODEV);
}

TEST_F(FuseServerTest, WritesAreCutToOnePageAndTruncationIsIgnored) {
  ASSERT_EQ(WriteFile(std::string(kTypeA) + "/create", kUuid).first, 0);
  const std::string label = "bus/mdev/devices/" + std::string(kUuid) + "/label";
  EXPECT_EQ(WriteFile(label, std::string(5000, 'x')), std::make_pair(0, ssize_t{4096}));
  EXPECT_EQ(registry_.ReadMdevAttribute(Uuid::Parse(kUuid).value(), "label")->size(), 4096u);
  UniqueFd fd(::open(PathOf(label).c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  ASSERT_TRUE(fd);
  EXPECT_EQ(::ftruncate(fd.get(), 0), 0);
  EXPECT_EQ(registry_.ReadMdevAttribute(Uuid::Parse(kUuid).value(), "label")->size(), 4096u);
}

TEST_F(FuseServerTest, StopCutsOffOpenFilesInsteadOfWaiting) {
  UniqueFd fd(::open(PathOf(std::string(kTypeA) + "/name").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  server_->Stop();
  char buffer[16];
  EXPECT_EQ(::pread(fd.get(), buffer, sizeof(buffer), 0), -1);
  EXPECT_EQ(errno, ENOTCONN);
}

}  // namespace
}  // namespace umdev::sysfs
