// umdev-device-plugin as kubelet sees it: the real umdevd (two mtty
// parents), the plugin binary, and a registration stub in kubelet's place
// that then calls the plugin's endpoints as kubelet does.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <gmock/gmock.h>

#include "kubelet_stub.h"
#include "tools/cli_fixture.h"
#include "umdev/cli/cdi.h"
#include "umdev/vfio_user/client.h"

namespace umdev::test {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kSerial = "umdev-serial.sock";
constexpr const char* kPorts = "umdev-mtty0.mtty-2.sock";

// One ListAndWatch stream, read until what the test waits for arrives.
class Watch {
 public:
  explicit Watch(v1beta1::DevicePlugin::Stub& plugin) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    context_.set_wait_for_ready(true);  // The plugin may not be serving yet.
    reader_ = plugin.ListAndWatch(&context_, v1beta1::Empty());
  }
  ~Watch() { context_.TryCancel(); }
  // Health by device ID, from the first message for which |done| holds
  // (empty if the stream ends first).
  template <typename Done>
  std::map<std::string, std::string> Until(Done done) {
    v1beta1::ListAndWatchResponse response;
    while (reader_->Read(&response)) {
      std::map<std::string, std::string> health;
      for (const auto& d : response.devices()) health[d.id()] = d.health();
      if (done(health)) return health;
    }
    return {};
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1beta1::ListAndWatchResponse>> reader_;
};

size_t Count(const std::map<std::string, std::string>& health, const std::string& state) {
  return static_cast<size_t>(std::count_if(health.begin(), health.end(),
                                           [&](const auto& entry) { return entry.second == state; }));
}

class DevicePluginKubeletTest : public CliFixture {
 protected:
  std::string Binary() const override { return UMDEVD; }
  std::string Config() const override { return TwoParents(); }
  static std::string TwoParents() {
    return R"({"parents":[{"driver":"mtty","name":"mtty0"},{"driver":"mtty","name":"mtty1"}],)"
           R"("limits":{"removal_timeout_ms":2000}})";
  }

  void SetUp() override {
    CliFixture::SetUp();
    plugin_dir_ = (dir_ / "dp").string();
    fs::create_directories(plugin_dir_);
    WriteFile("plugin.json", R"({"resources":[{"name":"serial","type":"mtty-1","parents":{"mtty0":2,"mtty1":1}}]})");
    kubelet_ = std::make_unique<KubeletStub>(plugin_dir_);
    ASSERT_TRUE(kubelet_->Start());
    StartPlugin();
  }

  void TearDown() override {
    if (plugin_ > 0) StopPlugin();
    kubelet_.reset();
    CliFixture::TearDown();
  }

  void StartPlugin() {
    const std::string log = (dir_ / "plugin.log").string();
    std::vector<std::string> args = {UMDEV_DEVICE_PLUGIN,
                                     "--state-dir", (dir_ / "state").string(),
                                     "--plugin-dir", plugin_dir_,
                                     "--config", (dir_ / "plugin.json").string(),
                                     "--resource", "mtty0.mtty-2=1",
                                     "--cdi-output", Cdi(),
                                     "--poll-interval-ms", "100"};
    plugin_ = fork();
    if (plugin_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    ASSERT_GT(plugin_, 0);
  }

  int StopPlugin() { return Terminate(plugin_); }

  std::string Cdi() const { return cdi_.empty() ? (dir_ / "cdi" / "umdev.io-device.json").string() : cdi_; }
  std::string Log() const { return ReadFile(dir_ / "plugin.log"); }

  // The serial resource's devices once all three are healthy. A stream the
  // plugin ends (it serves anew after a kubelet restart) is opened again,
  // as kubelet does.
  std::vector<std::string> HealthySerialDevices() {
    std::vector<std::string> ids;
    for (int attempt = 0; attempt < 20 && ids.empty(); ++attempt) {
      auto plugin = kubelet_->Dial(kSerial);
      Watch watch(*plugin);
      for (const auto& [id, state] : watch.Until([](const auto& h) { return Count(h, "Healthy") == 3; })) {
        ids.push_back(id);
      }
    }
    return ids;
  }

  std::string plugin_dir_;
  std::string cdi_;  // Where StartPlugin puts the CDI spec (default: DIR/cdi/).
  std::unique_ptr<KubeletStub> kubelet_;
  pid_t plugin_ = -1;
};

TEST_F(DevicePluginKubeletTest, RegistersAndServesWhatKubeletAsks) {
  const auto registrations = kubelet_->WaitForRegistrations(2);
  ASSERT_EQ(registrations.size(), 2u) << Log();
  std::map<std::string, v1beta1::RegisterRequest> by_resource;
  for (const auto& r : registrations) by_resource[r.resource_name()] = r;
  ASSERT_TRUE(by_resource.contains("umdev.io/serial"));
  ASSERT_TRUE(by_resource.contains("umdev.io/mtty0.mtty-2"));
  EXPECT_EQ(by_resource["umdev.io/serial"].version(), "v1beta1");
  EXPECT_EQ(by_resource["umdev.io/serial"].endpoint(), kSerial);
  EXPECT_TRUE(by_resource["umdev.io/serial"].options().get_preferred_allocation_available());
  EXPECT_TRUE(fs::is_socket(plugin_dir_ + "/" + kSerial));

  auto plugin = kubelet_->Dial(kSerial);
  {
    grpc::ClientContext context;
    v1beta1::DevicePluginOptions options;
    ASSERT_TRUE(plugin->GetDevicePluginOptions(&context, v1beta1::Empty(), &options).ok());
    EXPECT_TRUE(options.get_preferred_allocation_available());
    EXPECT_FALSE(options.pre_start_required());
  }
  // The plugin defined the instances in umdevd (persistent, started).
  const std::vector<std::string> ids = HealthySerialDevices();
  ASSERT_EQ(ids.size(), 3u) << Log();
  const Output defined = Ctl("list -d");
  for (const std::string& id : ids) EXPECT_THAT(defined.out, HasSubstr(id + " "));
  EXPECT_THAT(Ctl("list -d").out, HasSubstr("mtty0 mtty-2 auto (active)"));

  // Allocate: the sockets are mounted, named in variables and as CDI devices.
  grpc::ClientContext allocate_context;
  v1beta1::AllocateRequest request;
  auto* container = request.add_container_requests();
  container->add_devices_ids(ids[0]);
  container->add_devices_ids(ids[1]);
  v1beta1::AllocateResponse response;
  ASSERT_TRUE(plugin->Allocate(&allocate_context, request, &response).ok());
  ASSERT_EQ(response.container_responses_size(), 1);
  const auto& given = response.container_responses(0);
  ASSERT_EQ(given.mounts_size(), 2);
  for (int i = 0; i < 2; ++i) {
    const auto& mount = given.mounts(i);
    EXPECT_EQ(mount.container_path(), "/run/umdev/vfio-user/" + ids[static_cast<size_t>(i)] + ".sock");
    EXPECT_EQ(mount.host_path(), (dir_ / "state" / "vfio-user" / (ids[static_cast<size_t>(i)] + ".sock")).string());
    EXPECT_FALSE(mount.read_only());
    // The mount's source is the device: a vfio-user client negotiates on it.
    auto client = vfio_user::Client::Connect(mount.host_path());
    EXPECT_TRUE(client.has_value()) << client.error().Describe();
  }
  EXPECT_EQ(given.envs().at("UMDEV_SOCKETS"), given.mounts(0).container_path() + "," + given.mounts(1).container_path());
  EXPECT_EQ(given.envs().at("UMDEV_SOCKETS_SERIAL"), given.envs().at("UMDEV_SOCKETS"));
  ASSERT_EQ(given.cdi_devices_size(), 2);
  EXPECT_EQ(given.cdi_devices(0).name(), "umdev.io/device=" + ids[0]);

  // Those CDI names are in the spec the plugin keeps, which follows the rules.
  const Json spec = Json::parse(ReadFile(Cdi()));
  EXPECT_TRUE(cli::ValidateCdiSpec(spec).has_value());
  EXPECT_THAT(spec.dump(), HasSubstr("\"name\":\"" + ids[0] + "\""));
}

TEST_F(DevicePluginKubeletTest, StoppedDevicesTurnUnhealthyAndAreNotGiven) {
  const std::vector<std::string> ids = HealthySerialDevices();
  ASSERT_EQ(ids.size(), 3u) << Log();
  auto plugin = kubelet_->Dial(kSerial);
  Watch watch(*plugin);
  ASSERT_EQ(Ctl("stop -u " + ids[1]).status, 0);
  const auto health = watch.Until([&](const auto& h) { return h.count(ids[1]) && h.at(ids[1]) == "Unhealthy"; });
  ASSERT_EQ(health.size(), 3u) << Log();
  EXPECT_EQ(Count(health, "Healthy"), 2u);
  // Not restarted behind the operator's back, not allocated, out of the CDI spec.
  grpc::ClientContext context;
  v1beta1::AllocateRequest request;
  request.add_container_requests()->add_devices_ids(ids[1]);
  v1beta1::AllocateResponse response;
  const grpc::Status refused = plugin->Allocate(&context, request, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(), HasSubstr("not running"));
  for (int i = 0; i < 50 && ReadFile(Cdi()).find(ids[1]) != std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(ReadFile(Cdi()).find(ids[1]), std::string::npos);
  // Started again, it is healthy again.
  ASSERT_EQ(Ctl("start -u " + ids[1]).status, 0);
  EXPECT_EQ(Count(watch.Until([](const auto& h) { return Count(h, "Healthy") == 3; }), "Healthy"), 3u);
}

TEST_F(DevicePluginKubeletTest, HostileRequestsGetErrorsAndTheEndpointKeepsServing) {
  const std::vector<std::string> ids = HealthySerialDevices();
  ASSERT_EQ(ids.size(), 3u) << Log();
  auto plugin = kubelet_->Dial(kSerial);
  const auto allocate = [&](std::vector<std::string> asked) {
    grpc::ClientContext context;
    v1beta1::AllocateRequest request;
    auto* container = request.add_container_requests();
    for (const std::string& id : asked) container->add_devices_ids(id);
    v1beta1::AllocateResponse response;
    return plugin->Allocate(&context, request, &response).error_code();
  };
  EXPECT_EQ(allocate({"../../etc/passwd"}), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(allocate({ids[0], ids[0]}), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(allocate({}), grpc::StatusCode::INVALID_ARGUMENT);
  // A client that is not gRPC at all: bytes that are not HTTP/2, then a
  // connection left open without a word. Neither holds up kubelet's calls.
  const auto raw = [&] {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    const std::string path = plugin_dir_ + "/" + kSerial;
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    return fd;
  };
  const int garbage = raw();
  const std::string junk(64 * 1024, '\xff');
  EXPECT_GT(::write(garbage, junk.data(), junk.size()), 0);
  const int silent = raw();
  EXPECT_EQ(allocate({ids[1]}), grpc::StatusCode::OK);
  ::close(garbage);
  ::close(silent);
  {
    grpc::ClientContext context;
    v1beta1::PreferredAllocationRequest request;
    auto* container = request.add_container_requests();
    for (const std::string& id : ids) container->add_available_deviceids(id);
    container->set_allocation_size(2);
    v1beta1::PreferredAllocationResponse response;
    ASSERT_TRUE(plugin->GetPreferredAllocation(&context, request, &response).ok());
    ASSERT_EQ(response.container_responses_size(), 1);
    ASSERT_EQ(response.container_responses(0).deviceids_size(), 2);
    // Both on mtty0, the only parent with two: the defined list says which.
    const Output defined = Ctl("list -d");
    for (const std::string& id : response.container_responses(0).deviceids()) {
      EXPECT_THAT(defined.out, HasSubstr(id + " mtty0 mtty-1"));
    }
  }
  {
    grpc::ClientContext context;
    v1beta1::PreferredAllocationRequest request;
    request.add_container_requests()->set_allocation_size(-5);
    v1beta1::PreferredAllocationResponse response;
    EXPECT_EQ(plugin->GetPreferredAllocation(&context, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  // Still serving, still healthy.
  EXPECT_EQ(allocate({ids[2]}), grpc::StatusCode::OK);
}

TEST_F(DevicePluginKubeletTest, RegistersAgainWhenKubeletRestarts) {
  ASSERT_EQ(kubelet_->WaitForRegistrations(2).size(), 2u) << Log();
  // kubelet's restart clears the plugin sockets: the plugin serves anew and registers again.
  ASSERT_EQ(::unlink((plugin_dir_ + "/" + kSerial).c_str()), 0);
  const auto again = kubelet_->WaitForRegistrations(3);
  ASSERT_EQ(again.size(), 3u) << Log();
  EXPECT_EQ(again[2].resource_name(), "umdev.io/serial");
  for (int i = 0; i < 100 && !fs::is_socket(plugin_dir_ + "/" + kSerial); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(fs::is_socket(plugin_dir_ + "/" + kSerial));
  // A whole kubelet restart: its socket goes and comes back, every endpoint registers again.
  kubelet_->Stop();
  fs::remove(plugin_dir_ + "/" + kPorts);
  kubelet_ = std::make_unique<KubeletStub>(plugin_dir_);
  ASSERT_TRUE(kubelet_->Start());
  ASSERT_EQ(kubelet_->WaitForRegistrations(2).size(), 2u) << Log();
  EXPECT_EQ(HealthySerialDevices().size(), 3u);
}

TEST_F(DevicePluginKubeletTest, ARefusedRegistrationIsTriedAgain) {
  ASSERT_EQ(kubelet_->WaitForRegistrations(2).size(), 2u) << Log();
  // kubelet restarts and refuses the first registrations (another plugin
  // still held the names): the plugin keeps trying at each poll.
  kubelet_->Stop();
  kubelet_ = std::make_unique<KubeletStub>(plugin_dir_);
  kubelet_->RefuseNext(3);
  ASSERT_TRUE(kubelet_->Start());
  const auto registrations = kubelet_->WaitForRegistrations(2);
  ASSERT_EQ(registrations.size(), 2u) << Log();
  EXPECT_EQ(kubelet_->refused(), 3);
  EXPECT_NE(registrations[0].resource_name(), registrations[1].resource_name());
  EXPECT_THAT(Log(), HasSubstr("kubelet did not register it"));
  EXPECT_EQ(HealthySerialDevices().size(), 3u);
}

TEST_F(DevicePluginKubeletTest, ADaemonRestartAndAMissingParentAreSeen) {
  const std::vector<std::string> ids = HealthySerialDevices();
  ASSERT_EQ(ids.size(), 3u) << Log();
  auto plugin = kubelet_->Dial(kSerial);
  Watch watch(*plugin);
  // umdevd comes back without mtty1: its device is unhealthy, mtty0's are
  // healthy again (umdevd starts its "auto" definitions itself).
  ASSERT_EQ(WEXITSTATUS(StopDaemon()), 0);
  EXPECT_EQ(Count(watch.Until([](const auto& h) { return Count(h, "Unhealthy") == 3; }), "Unhealthy"), 3u);
  std::ofstream(dir_ / "config.json") << R"({"parents":[{"driver":"mtty","name":"mtty0"}]})";
  daemon_ = StartDaemon();
  const auto health = watch.Until([](const auto& h) { return Count(h, "Healthy") == 2; });
  EXPECT_EQ(Count(health, "Unhealthy"), 1u) << Log();
  EXPECT_THAT(Ctl("list -d").out, HasSubstr("mtty1 mtty-1 auto"));
}

TEST_F(DevicePluginKubeletTest, SigtermStopsCleanlyAndARestartAdoptsTheInstances) {
  const std::vector<std::string> ids = HealthySerialDevices();
  ASSERT_EQ(ids.size(), 3u) << Log();
  const int status = StopPlugin();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_FALSE(fs::exists(plugin_dir_ + "/" + kSerial));
  EXPECT_FALSE(fs::exists(plugin_dir_ + "/" + kPorts));
  StartPlugin();
  ASSERT_EQ(kubelet_->WaitForRegistrations(4).size(), 4u) << Log();
  EXPECT_EQ(HealthySerialDevices(), ids);  // The same instances, no new ones.
}

TEST_F(DevicePluginKubeletTest, ACdiSpecThatCannotBeWrittenDoesNotStopTheDevices) {
  ASSERT_EQ(kubelet_->WaitForRegistrations(2).size(), 2u) << Log();
  ASSERT_EQ(StopPlugin(), 0);
  // A file where the spec's folder should be.
  cdi_ = (dir_ / "blocker" / "umdev.io-device.json").string();
  WriteFile("blocker", "x");
  StartPlugin();
  ASSERT_EQ(kubelet_->WaitForRegistrations(4).size(), 4u) << Log();
  EXPECT_EQ(HealthySerialDevices().size(), 3u);
  EXPECT_THAT(Log(), HasSubstr("CDI spec not written"));
}

TEST_F(DevicePluginKubeletTest, BadConfigurationsAreRefusedAtStart) {
  const auto run = [&](const std::string& args) {
    return Run(std::string(UMDEV_DEVICE_PLUGIN) + " --plugin-dir " + plugin_dir_ + " " + args);
  };
  EXPECT_EQ(run("").status, 2);
  EXPECT_THAT(run("").out, HasSubstr("no resources configured"));
  EXPECT_THAT(run("--resource nodot=1").out, HasSubstr("is not PARENT.TYPE=COUNT"));
  EXPECT_THAT(run("--resource a.b=1 --resource a.b=2").out, HasSubstr("named twice"));
  WriteFile("bad.json", R"({"resources":[{"type":"t","parents":{"p":100000}}]})");
  EXPECT_THAT(run("--config " + (dir_ / "bad.json").string()).out, HasSubstr("at most 1024"));
  WriteFile("garbage.json", "{not json");
  EXPECT_EQ(run("--config " + (dir_ / "garbage.json").string()).status, 2);
  EXPECT_THAT(run("--resource a.b=1 --container-dir rel").out, HasSubstr("must be absolute"));
}

}  // namespace
}  // namespace umdev::test
