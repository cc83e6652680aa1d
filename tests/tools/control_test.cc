// The control protocol's handler and socket server, and the daemon config.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <linux/vfio.h>

#include <cstdlib>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "fakes/test_parent.h"
#include "umdev/control/client.h"
#include "umdev/control/definition_store.h"
#include "umdev/control/protocol.h"
#include "umdev/control/server.h"
#include "umdev/daemon/autostart.h"
#include "umdev/daemon/daemon.h"

namespace umdev::control {
namespace {

using Json = nlohmann::json;
using ::umdev::testing::TestParentDriver;

constexpr const char* kUuid = "11111111-1111-4111-8111-111111111111";

class HandlerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_
                    .RegisterParent(std::make_shared<TestParentDriver>(
                        TestParentDriver::Options{.max_instances = 1}))
                    .has_value());
  }
  Json Start(const std::string& uuid) {
    return HandleRequest(registry_, {{"cmd", "start"}, {"parent", "test_parent"},
                                     {"type", "test-a"}, {"uuid", uuid}});
  }
  Registry registry_;
};

TEST_F(HandlerTest, TypesListsParentsAndTypes) {
  const Json reply = HandleRequest(registry_, {{"cmd", "types"}});
  ASSERT_TRUE(reply["ok"].get<bool>());
  EXPECT_EQ(reply["parents"][0]["name"], "test_parent");
  EXPECT_EQ(reply["parents"][0]["types"][0]["id"], "test-a");
  EXPECT_EQ(reply["parents"][0]["types"][0]["available_instances"], 1);
}

TEST_F(HandlerTest, StartListStop) {
  EXPECT_EQ(Start(kUuid)["uuid"], kUuid);
  const Json list = HandleRequest(registry_, {{"cmd", "list"}});
  ASSERT_EQ(list["mdevs"].size(), 1u);
  EXPECT_EQ(list["mdevs"][0]["type"], "test-a");
  EXPECT_TRUE(HandleRequest(registry_, {{"cmd", "stop"}, {"uuid", kUuid}})["ok"].get<bool>());
  EXPECT_TRUE(HandleRequest(registry_, {{"cmd", "list"}})["mdevs"].empty());
}

TEST_F(HandlerTest, ErrorsCarryTheKernelErrno) {
  ASSERT_TRUE(Start(kUuid)["ok"].get<bool>());
  const Json again = Start(kUuid);
  EXPECT_FALSE(again["ok"].get<bool>());
  EXPECT_EQ(again["errno"], EEXIST);
  EXPECT_EQ(again["errname"], "EEXIST");
  EXPECT_EQ(Start("22222222-2222-4222-8222-222222222222")["errno"], EUSERS);
  EXPECT_EQ(Start("not-a-uuid")["errno"], EINVAL);
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "stop"}, {"uuid", "22222222-2222-4222-8222-222222222222"}})["errno"],
            ENODEV);
}

// The test device has only the core's VM attributes; mtty's are covered in
// tests/vendor.
TEST_F(HandlerTest, AttributeCommands) {
  ASSERT_TRUE(Start(kUuid)["ok"].get<bool>());
  const Json list = HandleRequest(registry_, {{"cmd", "attr-list"}, {"uuid", kUuid}});
  ASSERT_TRUE(list["ok"].get<bool>());
  ASSERT_EQ(list["attributes"].size(), 6u);
  EXPECT_EQ(list["attributes"][0]["name"], "vm_uuid");
  EXPECT_EQ(list["attributes"][4]["name"], "bound_vm_uuid");
  EXPECT_EQ(list["attributes"][4]["writable"], true);
  EXPECT_EQ(list["attributes"][5]["name"], "busy_poll_us");
  EXPECT_EQ(list["attributes"][5]["writable"], true);
  // busy_poll_us: microseconds, 0 .. 100000.
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "attr-get"}, {"uuid", kUuid},
                                      {"name", "busy_poll_us"}})["value"],
            "0");
  EXPECT_TRUE(HandleRequest(registry_, {{"cmd", "attr-set"}, {"uuid", kUuid},
                                        {"name", "busy_poll_us"}, {"value", "50\n"}})["ok"]
                  .get<bool>());
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "attr-get"}, {"uuid", kUuid},
                                      {"name", "busy_poll_us"}})["value"],
            "50");
  for (const char* bad : {"", "-1", "5us", "100001", "99999999999999999999"}) {
    EXPECT_EQ(HandleRequest(registry_, {{"cmd", "attr-set"}, {"uuid", kUuid},
                                        {"name", "busy_poll_us"}, {"value", bad}})["errno"],
              EINVAL)
        << bad;
  }
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "attr-get"}, {"uuid", kUuid}, {"name", "vm_pid"}})["value"],
            "");
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "attr-get"}, {"uuid", kUuid}, {"name", "x"}})["errno"],
            ENOENT);
  EXPECT_EQ(HandleRequest(registry_,
                          {{"cmd", "attr-set"}, {"uuid", kUuid}, {"name", "x"}, {"value", "1"}})["errno"],
            ENOENT);
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "attr-set"}, {"uuid", kUuid}, {"name", "x"}})["errno"],
            EINVAL)
      << "no value";
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "attr-get"}, {"uuid", kUuid}})["errno"], EINVAL);
  const char* other = "22222222-2222-4222-8222-222222222222";
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "attr-list"}, {"uuid", other}})["errno"], ENODEV);
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "attr-get"}, {"uuid", other}, {"name", "x"}})["errno"],
            ENODEV);
}

TEST_F(HandlerTest, StartWithAMissingAttributeRemovesTheDeviceAgain) {
  const Json reply = HandleRequest(registry_, {{"cmd", "start"}, {"parent", "test_parent"},
                                               {"type", "test-a"}, {"uuid", kUuid},
                                               {"attrs", Json::parse(R"([{"nope":"1"}])")}});
  EXPECT_EQ(reply["errno"], ENOENT);
  EXPECT_EQ(reply["attr"], Json::parse(R"({"name":"nope","value":"1","exists":false})"));
  EXPECT_TRUE(registry_.Mdevs().empty());
  EXPECT_EQ(registry_.Parents()[0].types[0].available_instances, 1u) << "the instance came back";
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "start"}, {"parent", "test_parent"}, {"type", "test-a"},
                                      {"uuid", kUuid}, {"attrs", "x"}})["errno"],
            EINVAL);
  EXPECT_TRUE(registry_.Mdevs().empty());
}

TEST_F(HandlerTest, DefinitionVerbsNeedAStore) {
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "defined"}})["errno"], EOPNOTSUPP);
}

class DefinitionVerbsTest : public HandlerTest {
 protected:
  static std::filesystem::path TestDir() {
    return std::filesystem::temp_directory_path() /
           ("umdev-defverbs-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void SetUp() override {
    HandlerTest::SetUp();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  Json Call(const Json& request) { return HandleRequest(registry_, &store_, request); }
  const std::filesystem::path dir_ = TestDir();
  DefinitionStore store_{dir_.string()};
};

TEST_F(DefinitionVerbsTest, DefineListAndUndefine) {
  const Json config = Json::parse(R"({"mdev_type":"test-a","start":"auto","attrs":[{"k":"v"}]})");
  EXPECT_TRUE(Call({{"cmd", "define"}, {"parent", "p"}, {"uuid", kUuid}, {"config", config}})["ok"].get<bool>());
  EXPECT_EQ(Call({{"cmd", "define"}, {"parent", "p"}, {"uuid", kUuid}, {"config", config}})["errno"], EEXIST);
  Json replaced = config;
  replaced["start"] = "manual";
  EXPECT_TRUE(Call({{"cmd", "define"}, {"parent", "p"}, {"uuid", kUuid}, {"config", replaced},
                    {"replace", true}})["ok"].get<bool>());
  const Json listed = Call({{"cmd", "defined"}});
  ASSERT_EQ(listed["definitions"].size(), 1u);
  EXPECT_EQ(listed["definitions"][0],
            Json::parse(std::string(R"({"parent":"p","uuid":")") + kUuid +
                        R"(","mdev_type":"test-a","start":"manual","attrs":[{"k":"v"}]})"));
  EXPECT_TRUE(Call({{"cmd", "undefine"}, {"parent", "p"}, {"uuid", kUuid}})["ok"].get<bool>());
  EXPECT_EQ(Call({{"cmd", "undefine"}, {"parent", "p"}, {"uuid", kUuid}})["errno"], ENOENT);
  EXPECT_TRUE(Call({{"cmd", "defined"}})["definitions"].empty());
}

TEST_F(DefinitionVerbsTest, BadDefinitionsChangeNothing) {
  EXPECT_EQ(Call({{"cmd", "define"}, {"parent", "p"}, {"uuid", kUuid}})["errno"], EINVAL);
  EXPECT_EQ(Call({{"cmd", "define"}, {"parent", "p"}, {"uuid", kUuid},
                  {"config", Json::parse(R"({"start":"auto"})")}})["message"],
            "invalid json");
  EXPECT_EQ(Call({{"cmd", "define"}, {"parent", "../x"}, {"uuid", kUuid},
                  {"config", Json::parse(R"({"mdev_type":"t","start":"auto"})")}})["errno"],
            EINVAL);
  EXPECT_EQ(Call({{"cmd", "define"}, {"parent", "p"}, {"uuid", "nope"},
                  {"config", Json::parse(R"({"mdev_type":"t","start":"auto"})")}})["errno"],
            EINVAL);
  EXPECT_TRUE(Call({{"cmd", "defined"}})["definitions"].empty());
  EXPECT_FALSE(std::filesystem::exists(dir_));
}

TEST_F(DefinitionVerbsTest, AutostartStartsAutoDefinitionsWhenTheirParentRegisters) {
  const char* manual = "22222222-2222-4222-8222-222222222222";
  const char* broken = "33333333-3333-4333-8333-333333333333";
  ASSERT_TRUE(store_.Write("late", *Uuid::Parse(kUuid), {"test-a", true, {}},
                           DefinitionStore::Mode::kCreate).has_value());
  ASSERT_TRUE(store_.Write("late", *Uuid::Parse(manual), {"test-a", false, {}},
                           DefinitionStore::Mode::kCreate).has_value());
  ASSERT_TRUE(store_.Write("late", *Uuid::Parse(broken), {"test-z", true, {}},
                           DefinitionStore::Mode::kCreate).has_value());
  daemon::Autostarter autostart(registry_, store_);
  registry_.AddObserver(&autostart);
  ASSERT_TRUE(registry_
                  .RegisterParent(std::make_shared<TestParentDriver>(
                      TestParentDriver::Options{.parent_name = "late"}))
                  .has_value());
  registry_.RemoveObserver(&autostart);
  const auto mdevs = registry_.Mdevs();
  ASSERT_EQ(mdevs.size(), 1u) << "the manual one waits; the bad type is logged and skipped";
  EXPECT_EQ(mdevs[0].uuid.ToString(), kUuid);
  EXPECT_EQ(mdevs[0].parent, "late");
  EXPECT_EQ(autostart.StartParent("late"), 0u) << "a running definition is not started twice";
}

TEST_F(HandlerTest, MalformedRequestsAreEinval) {
  EXPECT_EQ(HandleRequest(registry_, Json::array())["errno"], EINVAL);
  EXPECT_EQ(HandleRequest(registry_, {{"command", "types"}})["errno"], EINVAL);
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "reboot"}})["errno"], EINVAL);
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "start"}, {"parent", 7}})["errno"], EINVAL);
}

TEST(ControlServerTest, SocketIsOwnerOnlyAndRemovedOnStop) {
  Registry registry;
  const auto dir = std::filesystem::temp_directory_path() / ("umdev-sock-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "control.sock").string();
  ControlServer server(registry, path);
  ASSERT_TRUE(server.Start().has_value());
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto client = ControlClient::Connect(path);
  ASSERT_TRUE(client.has_value());
  EXPECT_TRUE(client->Call({{"cmd", "list"}}).has_value());
  auto failed = client->Call({{"cmd", "nope"}});
  ASSERT_FALSE(failed.has_value());
  EXPECT_EQ(failed.error().code, EINVAL);
  server.Stop();
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(ControlClient::Connect(path).error().code, ENOENT);
  std::filesystem::remove_all(dir);
}

// A daemon that accepts and never answers: a client with a timeout gets
// ETIMEDOUT instead of hanging (the device plugin's poll loop relies on it).
TEST(ControlClientTest, ASilentDaemonTimesOut) {
  const auto dir = std::filesystem::temp_directory_path() / ("umdev-silent-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "control.sock").string();
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  auto client = ControlClient::Connect(path);
  ASSERT_TRUE(client.has_value());
  ASSERT_TRUE(client->SetTimeout(std::chrono::milliseconds(100)).has_value());
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(client->Call({{"cmd", "list"}}).error().code, ETIMEDOUT);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  ::close(listener);
  std::filesystem::remove_all(dir);
}

TEST(ControlServerTest, InvalidJsonAndOverlongLinesGetErrorReplies) {
  Registry registry;
  const auto dir = std::filesystem::temp_directory_path() / ("umdev-bad-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "control.sock").string();
  ControlServer server(registry, path);
  ASSERT_TRUE(server.Start().has_value());
  // Raw socket: the client library only sends valid JSON.
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string garbage = "{not json\n";
  ASSERT_EQ(send(fd.get(), garbage.data(), garbage.size(), 0), static_cast<ssize_t>(garbage.size()));
  char reply[512] = {};
  ASSERT_GT(recv(fd.get(), reply, sizeof(reply) - 1, 0), 0);
  EXPECT_EQ(Json::parse(reply)["errno"], EINVAL);
  const std::string huge(kMaxLineBytes + 10, 'x');
  (void)send(fd.get(), huge.data(), huge.size(), MSG_NOSIGNAL);
  std::string rest;
  char chunk[512];
  for (ssize_t n; (n = recv(fd.get(), chunk, sizeof(chunk), 0)) > 0;) rest.append(chunk, n);
  EXPECT_EQ(Json::parse(rest.substr(0, rest.find('\n')))["errno"], E2BIG);  // Then closed.
  // The server keeps serving others.
  EXPECT_TRUE(ControlClient::Connect(path)->Call({{"cmd", "types"}}).has_value());
  server.Stop();
  std::filesystem::remove_all(dir);
}

TEST(ControlServerTest, ConnectionsPastTheCapAreRefusedWithEbusy) {
  Registry registry;
  const auto dir = std::filesystem::temp_directory_path() / ("umdev-cap-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "control.sock").string();
  ControlServer server(registry, path);
  ASSERT_TRUE(server.Start().has_value());
  // Each held client has completed a call, so the server counts it as open.
  std::vector<ControlClient> held;
  for (size_t i = 0; i < ControlServer::kMaxConnections; ++i) {
    held.push_back(ControlClient::Connect(path).value());
    ASSERT_TRUE(held.back().Call({{"cmd", "list"}}).has_value());
  }
  auto refused = ControlClient::Connect(path).value().Call({{"cmd", "list"}});
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, EBUSY);
  held.pop_back();  // A slot frees once the server sees the disconnect.
  bool served = false;
  for (int attempt = 0; attempt < 200 && !served; ++attempt) {
    served = ControlClient::Connect(path).value().Call({{"cmd", "list"}}).has_value();
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(served);
  held.clear();
  server.Stop();
  std::filesystem::remove_all(dir);
}

TEST(ConfigTest, DefaultConfigParses) {
  auto config = daemon::ParseConfig(daemon::DefaultConfigText());
  ASSERT_TRUE(config.has_value());
  EXPECT_EQ(config->log_level, "info");
  EXPECT_EQ(config->removal_timeout.count(), 10000);
  ASSERT_EQ(config->parents.size(), 1u);
  EXPECT_EQ(config->parents[0]["driver"], "mtty");
}

TEST(ConfigTest, ParsesParentsAndLimits) {
  auto config = daemon::ParseConfig(
      R"({"parents":[{"driver":"test","name":"p0"}],"limits":{"removal_timeout_ms":250}})");
  ASSERT_TRUE(config.has_value());
  ASSERT_EQ(config->parents.size(), 1u);
  EXPECT_EQ(config->parents[0]["name"], "p0");
  EXPECT_EQ(config->removal_timeout.count(), 250);
}

TEST(ConfigTest, ParsesPinningLimits) {
  auto config = daemon::ParseConfig(
      R"({"limits":{"locked_memory_bytes":1048576,"container_locked_bytes":4096,"max_dma_mappings":100}})");
  ASSERT_TRUE(config.has_value());
  EXPECT_EQ(config->locked_memory_bytes, 1048576u);
  EXPECT_EQ(config->container_locked_bytes, 4096u);
  EXPECT_EQ(config->max_dma_mappings, 100u);
  EXPECT_EQ(daemon::ParseConfig(R"({"limits":{"max_dma_mappings":70000}})").error().code, EINVAL);
}

TEST_F(HandlerTest, SysfsCommandsServeTheTreeWithItsErrnos) {
  const std::string type = "class/mdev_bus/test_parent/mdev_supported_types/test-a";
  const Json stat = HandleRequest(registry_, {{"cmd", "sysfs-stat"}, {"path", "class/mdev_bus/test_parent"}});
  ASSERT_TRUE(stat["ok"].get<bool>()) << stat.dump();
  EXPECT_EQ(stat["kind"], "link");
  EXPECT_EQ(stat["mode"], 0777);
  EXPECT_EQ(stat["target"], "../../devices/virtual/umdev/test_parent");
  const Json list = HandleRequest(registry_, {{"cmd", "sysfs-list"}, {"path", type}});
  ASSERT_TRUE(list["ok"].get<bool>()) << list.dump();
  ASSERT_EQ(list["entries"].size(), 6u);
  EXPECT_EQ(list["entries"][1], Json({{"name", "create"}, {"kind", "file"}, {"mode", 0200}}));
  EXPECT_EQ(list["entries"][4], Json({{"name", "devices"}, {"kind", "dir"}, {"mode", 0755}}));
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "sysfs-read"}, {"path", type + "/available_instances"}})["value"],
            "1\n");
  const Json created = HandleRequest(
      registry_, {{"cmd", "sysfs-write"}, {"path", type + "/create"}, {"value", std::string(kUuid) + "\n"}});
  EXPECT_TRUE(created["ok"].get<bool>()) << created.dump();
  EXPECT_EQ(registry_.Mdevs().size(), 1u);
  const Json again = HandleRequest(
      registry_, {{"cmd", "sysfs-write"}, {"path", type + "/create"}, {"value", kUuid}});
  EXPECT_EQ(again["errname"], "EEXIST");
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "sysfs-read"}, {"path", type + "/create"}})["errno"], EACCES);
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "sysfs-list"}, {"path", "nope"}})["errno"], ENOENT);
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "sysfs-write"}, {"path", type + "/create"}})["errno"], EINVAL);
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "sysfs-read"}})["errno"], EINVAL);
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "sysfs-chmod"}, {"path", ""}})["errno"], EINVAL);
  const Json removed = HandleRequest(
      registry_, {{"cmd", "sysfs-write"}, {"path", std::string("bus/mdev/devices/") + kUuid + "/remove"},
                  {"value", "1"}});
  EXPECT_TRUE(removed["ok"].get<bool>()) << removed.dump();
  EXPECT_TRUE(registry_.Mdevs().empty());
}

TEST_F(HandlerTest, SysfsCommandsUseTheDaemonsTreeWhenGiven) {
  const sysfs::Tree tree(registry_, sysfs::TreeOptions{.socket_path = [](std::string_view) {
                           return std::string("/sock");
                         }});
  ASSERT_TRUE(Start(kUuid)["ok"].get<bool>());
  const std::string path = std::string("bus/mdev/devices/") + kUuid + "/vfio_user_socket";
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "sysfs-read"}, {"path", path}}, &tree)["value"], "/sock\n");
  EXPECT_EQ(HandleRequest(registry_, {{"cmd", "sysfs-read"}, {"path", path}})["errno"], ENOENT);
}

TEST(ConfigTest, ParsesTheSysfsMountPoint) {
  EXPECT_EQ(daemon::ParseConfig("{}")->sysfs_mount, "");  // Not mounted by default.
  EXPECT_EQ(daemon::ParseConfig(R"({"sysfs_mount":"/run/umdev/sys"})")->sysfs_mount, "/run/umdev/sys");
  EXPECT_EQ(daemon::ParseConfig(R"({"sysfs_mount":1})").error().code, EINVAL);
}

TEST(DaemonTest, RegistersTheType1Backend) {
  const auto dir = std::filesystem::temp_directory_path() / ("umdev-t1-" + std::to_string(getpid()));
  daemon::Daemon d(daemon::Options{.state_dir = dir.string(), .config = {}});
  ASSERT_TRUE(d.Start().has_value());
  EXPECT_TRUE(d.registry().iommu_drivers().CheckExtension(VFIO_TYPE1v2_IOMMU));
  d.Stop();
  std::filesystem::remove_all(dir);
}

TEST(ConfigTest, RejectsWhatItDoesNotKnow) {
  EXPECT_EQ(daemon::ParseConfig("{").error().code, EINVAL);
  EXPECT_EQ(daemon::ParseConfig("[]").error().code, EINVAL);
  EXPECT_EQ(daemon::ParseConfig(R"({"colour":"blue"})").error().code, EINVAL);
  EXPECT_EQ(daemon::ParseConfig(R"({"parents":[{"name":"x"}]})").error().code, EINVAL);
  EXPECT_EQ(daemon::ParseConfig(R"({"limits":{"removal_timeout_ms":-1}})").error().code, EINVAL);
  EXPECT_EQ(daemon::ParseConfig(R"({"limits":{"speed":1}})").error().code, EINVAL);
}

TEST(DaemonTest, UnknownParentDriverFailsStart) {
  const auto dir = std::filesystem::temp_directory_path() / ("umdev-d-" + std::to_string(getpid()));
  auto config = daemon::ParseConfig(R"({"parents":[{"driver":"warp"}]})").value();
  daemon::Daemon d(daemon::Options{.state_dir = dir.string(), .config = config});
  auto started = d.Start();
  ASSERT_FALSE(started.has_value());
  EXPECT_EQ(started.error().code, EINVAL);
  d.Stop();
  std::filesystem::remove_all(dir);
}

TEST(DaemonTest, SecondDaemonOnOneStateDirIsRefused) {
  const auto dir = std::filesystem::temp_directory_path() / ("umdev-l-" + std::to_string(getpid()));
  daemon::Daemon first(daemon::Options{.state_dir = dir.string(), .config = {}});
  ASSERT_TRUE(first.Start().has_value());
  daemon::Daemon second(daemon::Options{.state_dir = dir.string(), .config = {}});
  EXPECT_EQ(second.Start().error().code, EWOULDBLOCK);
  first.Stop();
  daemon::Daemon third(daemon::Options{.state_dir = dir.string(), .config = {}});
  EXPECT_TRUE(third.Start().has_value());
  third.Stop();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace umdev::control
