// Debian trixie's own mdevctl (from the QEMU root, run chrooted with
// MDEVCTL_ENV_ROOT) against the sysfs tree a real umdevd mounts over FUSE,
// side by side with umdevctl: both must manage the same devices and print the
// same bytes.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "e2e/qemu_guest.h"
#include "e2e/qemu_qtest.h"
#include "e2e/umdevd_process.h"
#include "umdev/common/unique_fd.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* kMttyConfig = R"({"parents":[{"driver":"mtty"}]})";
constexpr const char* kA = "a1111111-1111-4111-8111-111111111111";
constexpr const char* kB = "b2222222-2222-4222-8222-222222222222";

using Output = ShellOutput;

std::vector<std::string> Words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string word; in >> word;) words.push_back(word);
  return words;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

class StockMdevctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto root = QemuRootFromEnvironment();
    if (!root) {
      GTEST_SKIP() << "UMDEV_QEMU_ROOT is not set: run 'make test', which builds the QEMU "
                      "root (scripts/qemu-root) with mdevctl and points the tests at it";
    }
    UniqueFd fuse(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
    if (!fuse) GTEST_SKIP() << "FUSE is not usable here: open /dev/fuse: " << std::strerror(errno);
    root_ = *root;
    ASSERT_EQ(::access((root_ / "usr/bin/mdevctl").c_str(), X_OK), 0)
        << "the QEMU root has no mdevctl: rebuild it with scripts/qemu-root";
    auto scratch = RootScratchDir::Create(root_);
    ASSERT_TRUE(scratch.has_value()) << scratch.error().Describe();
    scratch_.emplace(std::move(*scratch));
    // MDEVCTL_ENV_ROOT is a miniature /: sys is umdevd's mount, etc/mdevctl.d
    // is umdevd's definition directory, and the call-out directories are
    // empty, as on a host with no vendor scripts.
    env_ = scratch_->path() / "env";
    for (const char* dir : {"sys", "etc", "usr/lib/mdevctl/scripts.d/callouts",
                            "usr/lib/mdevctl/scripts.d/notifiers"}) {
      fs::create_directories(env_ / dir);
    }
    fs::create_directory_symlink("../../state/mdevctl.d", env_ / "etc/mdevctl.d");
    auto env_in_root = PathInsideRoot(root_, env_);
    ASSERT_TRUE(env_in_root.has_value()) << env_in_root.error().Describe();
    env_in_root_ = *env_in_root;
    StartDaemon();
  }

  void TearDown() override {
    if (daemon_ && HasFailure()) std::cerr << "umdevd log:\n" << daemon_->Log();
    daemon_.reset();  // Unmounts the tree before the scratch directory goes.
    scratch_.reset();
  }

  void StartDaemon() {
    // The daemon's state is the scratch directory itself: vfio-user socket
    // paths must stay within sun_path's 108 bytes.
    auto daemon = UmdevdProcess::Start(UMDEVD, scratch_->path(), kMttyConfig,
                                       {"--sysfs-mount", (env_ / "sys").string()});
    ASSERT_TRUE(daemon.has_value()) << daemon.error().Describe();
    daemon_.emplace(std::move(*daemon));
  }

  void RestartDaemon() {
    daemon_.reset();
    StartDaemon();
  }

  // Stock mdevctl, or lsmdev (the same binary by another name), in the root.
  Output Stock(const std::string& args, const char* binary = "/usr/bin/mdevctl") {
    std::vector<std::string> argv = {"/usr/bin/env", "MDEVCTL_ENV_ROOT=" + env_in_root_, binary};
    for (std::string& word : Words(args)) argv.push_back(std::move(word));
    auto result = RunInRootWithStatus(root_, argv);
    EXPECT_TRUE(result.has_value()) << result.error().Describe();
    if (!result.has_value()) return {};
    return Output{result->exit_status, std::move(result->output)};
  }

  Output Ours(const std::string& args, const char* binary = UMDEVCTL) {
    return RunShell(std::string(binary) + " --state-dir " + daemon_->state_dir().string() + " " +
                    args + " 2>&1");
  }

  // Both tools answer |args| with the same exit status and the same bytes
  // (clap's usage lines name the program, so umdevctl's own name is mapped).
  void ExpectSame(const std::string& args) {
    SCOPED_TRACE(args);
    Output ours = Ours(args);
    for (size_t at; (at = ours.out.find("Usage: umdevctl")) != std::string::npos;) {
      ours.out.replace(at, 15, "Usage: mdevctl");
    }
    EXPECT_EQ(ours, Stock(args));
  }

  fs::path Definitions() const { return daemon_->state_dir() / "mdevctl.d"; }

  fs::path root_;
  fs::path env_;
  std::string env_in_root_;
  std::optional<RootScratchDir> scratch_;
  std::optional<UmdevdProcess> daemon_;
};

TEST_F(StockMdevctlTest, TypesAgree) {
  const Output types = Stock("types");
  ASSERT_EQ(types.status, 0) << types;
  EXPECT_NE(types.out.find("  mtty-2\n    Available instances: 12\n"), std::string::npos) << types;
  ExpectSame("types");
  ExpectSame("types --dumpjson");
  ExpectSame("types -p mtty");
  ExpectSame("types -p nothere");
  ExpectSame("types -p nothere --dumpjson");
}

TEST_F(StockMdevctlTest, DeviceStartedByMdevctlIsUmdevsAndUmdevctlStopsIt) {
  const Output started = Stock(std::string("start -p mtty -t mtty-2 -u ") + kA);
  ASSERT_EQ(started, (Output{0, ""}));
  // The tree's create file made a real instance, with its vfio-user socket.
  EXPECT_TRUE(fs::exists(daemon_->state_dir() / "vfio-user" / (std::string(kA) + ".sock")));
  EXPECT_NE(Stock("types -p mtty").out.find("mtty-2\n    Available instances: 11\n"),
            std::string::npos);
  ExpectSame("list");
  ExpectSame("list --dumpjson");
  ExpectSame(std::string("list --dumpjson -u ") + kA);
  ExpectSame("list -v");
  ExpectSame("types");
  EXPECT_EQ(Ours(std::string("stop -u ") + kA), (Output{0, ""}));
  EXPECT_EQ(Stock("list"), (Output{0, ""}));
  ExpectSame(std::string("stop -u ") + kA);
}

TEST_F(StockMdevctlTest, TransientStartWithoutUuidPrintsTheOneTheTreeCreated) {
  const Output started = Stock("start -p mtty -t mtty-1");
  ASSERT_EQ(started.status, 0) << started;
  const std::string uuid = started.out.substr(0, started.out.find('\n'));
  EXPECT_EQ(Ours("list").out, uuid + " mtty mtty-1 manual\n");
  EXPECT_EQ(Stock("stop -u " + uuid), (Output{0, ""}));
  EXPECT_EQ(Ours("list"), (Output{0, ""}));
}

TEST_F(StockMdevctlTest, DefinitionsAreOneStoreForBothTools) {
  ASSERT_EQ(Stock(std::string("define -p mtty -t mtty-1 --auto -u ") + kA), (Output{0, ""}));
  ASSERT_EQ(Ours(std::string("define -p mtty -t mtty-1 --auto -u ") + kB), (Output{0, ""}));
  // Same parent, type and mode: the two tools wrote the same file.
  EXPECT_EQ(ReadFile(Definitions() / "mtty" / kA), ReadFile(Definitions() / "mtty" / kB));
  ExpectSame("list -d");
  ExpectSame("list -d --dumpjson");
  EXPECT_EQ(Ours("list -d"), Stock("-d", "/usr/bin/lsmdev"));
  // Each tool starts the other's definition.
  EXPECT_EQ(Stock(std::string("start -u ") + kB), (Output{0, ""}));
  EXPECT_EQ(Ours(std::string("start -u ") + kA), (Output{0, ""}));
  ExpectSame("list");
  ExpectSame("list -d");
  EXPECT_EQ(Ours("list").out, std::string(kA) + " mtty mtty-1 auto (defined)\n" + kB +
                                  " mtty mtty-1 auto (defined)\n");
  EXPECT_EQ(Stock(std::string("stop -u ") + kB), (Output{0, ""}));
  EXPECT_EQ(Ours(std::string("stop -u ") + kA), (Output{0, ""}));
  EXPECT_EQ(Stock(std::string("undefine -u ") + kB), (Output{0, ""}));
  EXPECT_EQ(Ours(std::string("undefine -u ") + kA), (Output{0, ""}));
  ExpectSame("list -d");
  EXPECT_EQ(Stock("list -d"), (Output{0, ""}));
}

TEST_F(StockMdevctlTest, MdevctlWritesItsAttributesThroughTheTree) {
  const std::string uuid = kA;
  ASSERT_EQ(Stock("define -p mtty -t mtty-2 -u " + uuid), (Output{0, ""}));
  ASSERT_EQ(Stock("modify -u " + uuid + " --addattr far_end --value pty"), (Output{0, ""}));
  ExpectSame("list -d -v");
  ASSERT_EQ(Stock("start -u " + uuid), (Output{0, ""}));
  // far_end=pty made the device open two host PTYs, which it names.
  const Output ptys = Ours("attr -u " + uuid + " -n pty");
  ASSERT_EQ(ptys.status, 0) << ptys;
  EXPECT_EQ(ptys.out.rfind("/dev/pts/", 0), 0u) << ptys;
  EXPECT_EQ(Ours("attr -u " + uuid + " -n far_end").out, "pty\n");
  ExpectSame("list -d -v");
  EXPECT_EQ(Stock("stop -u " + uuid), (Output{0, ""}));
}

TEST_F(StockMdevctlTest, ARefusedAttributeStopsTheDeviceAgainInBothTools) {
  const std::string uuid = kA;
  ASSERT_EQ(Stock("define -p mtty -t mtty-1 -u " + uuid), (Output{0, ""}));
  ASSERT_EQ(Stock("modify -u " + uuid + " --addattr far_end --value bogus"), (Output{0, ""}));
  const Output stock = Stock("start -u " + uuid);
  EXPECT_NE(stock.status, 0) << stock;
  EXPECT_EQ(Ours("list"), (Output{0, ""})) << "mdevctl removes a device whose attribute failed";
  EXPECT_EQ(Ours("start -u " + uuid), stock);
  EXPECT_EQ(Stock("list"), (Output{0, ""}));
}

TEST_F(StockMdevctlTest, AutoDefinitionsStartAfterADaemonRestart) {
  ASSERT_EQ(Stock(std::string("define -p mtty -t mtty-2 --auto -u ") + kA), (Output{0, ""}));
  ASSERT_EQ(Stock(std::string("define -p mtty -t mtty-1 -u ") + kB), (Output{0, ""}));
  RestartDaemon();
  EXPECT_EQ(Stock("list"), (Output{0, std::string(kA) + " mtty mtty-2 auto (defined)\n"}));
  ExpectSame("list");
  ExpectSame("list -d");
}

TEST_F(StockMdevctlTest, ErrorsAgree) {
  ExpectSame("start -p nothere -t mtty-1");
  ExpectSame("start -p mtty -t nope");
  ExpectSame("start -p mtty -t mtty-1 -u not-a-uuid");
  ExpectSame(std::string("start -u ") + kA);
  ExpectSame(std::string("stop -u ") + kA);
  ExpectSame(std::string("undefine -u ") + kA);
  ExpectSame("define -p mtty -u " + std::string(kA));
  ExpectSame("define -t mtty-1 -u " + std::string(kA));
  ASSERT_EQ(Stock(std::string("start -p mtty -t mtty-1 -u ") + kA), (Output{0, ""}));
  ExpectSame(std::string("start -p mtty -t mtty-1 -u ") + kA);
  ExpectSame(std::string("start -p mtty -t mtty-2 -u ") + kA);
  EXPECT_EQ(Stock(std::string("stop -u ") + kA), (Output{0, ""}));
}

TEST_F(StockMdevctlTest, UsageErrorsAgree) {
  const std::string u = std::string(" -u ") + kA;
  for (const std::string& args : std::vector<std::string>{
           "start", "define -a -t mtty-1", "start -t mtty-1 -f", "stop", "stop -f", "undefine",
        "list -u", "types -p", "list -x", "list extra", "stop -u bad", "modify --auto",
        "modify" + u, "modify" + u + " --addattr x", "modify" + u + " -i 1 --value 1",
        "modify" + u + " --addattr x -p mtty", "modify" + u + " --auto --manual",
        "modify" + u + " --value 2 --auto --manual", "modify" + u + " -t x --live --jsonfile f",
        "modify" + u + " --delattr --value 1", "define --jsonfile f -t mtty-1",
        "start --jsonfile f -t mtty-1"}) {
    ExpectSame(args);
  }
}

TEST_F(StockMdevctlTest, TheLastInstanceGoesToOneToolAndBothReportNoneLeft) {
  // mtty-2 takes two of the parent's 24 ports: twelve instances fit.
  for (int i = 0; i < 12; ++i) {
    const Output started = (i % 2 == 0 ? Stock("start -p mtty -t mtty-2")
                                       : Ours("start -p mtty -t mtty-2"));
    ASSERT_EQ(started.status, 0) << i << ": " << started;
  }
  ExpectSame("types -p mtty");
  ExpectSame("start -p mtty -t mtty-2 -u " + std::string(kA));
  ExpectSame("start -p mtty -t mtty-1 -u " + std::string(kA));
  ExpectSame("list");
}

}  // namespace
}  // namespace umdev::test
