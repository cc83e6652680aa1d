// umdevctl stats and top against the real umdevd (gpu parent, CPU engine):
// the JSON snapshot, and the live view in a real terminal driven by tmux.
#include <thread>

#include <nlohmann/json.hpp>

#include "cli_fixture.h"

namespace umdev::test {
namespace {

constexpr const char* kU1 = "6a8bf4d4-0c8e-4a0b-9d2c-7f1e2d3c4b5a";

class TopCliTest : public CliFixture {
 protected:
  std::string Binary() const override { return UMDEVD; }
  std::string Config() const override {
    return R"({"parents":[{"driver":"gpu","engine":"cpu","memory":"16M"}]})";
  }
  void SetUp() override {
    CliFixture::SetUp();
    ASSERT_EQ(Ctl("start -p gpu-cpu -t gpu-1of2 -u " + std::string(kU1)).status, 0);
  }
};

TEST_F(TopCliTest, StatsJsonDescribesEveryDevice) {
  const Output stats = Ctl("stats --json");
  ASSERT_EQ(stats.status, 0) << stats.out;
  const auto json = nlohmann::json::parse(stats.out);
  ASSERT_EQ(json["devices"].size(), 1u);
  const auto& device = json["devices"][0];
  EXPECT_EQ(device["uuid"], kU1);
  EXPECT_EQ(device["parent"], "gpu-cpu");
  EXPECT_EQ(device["open"], false);
  EXPECT_EQ(device["locked_bytes"], 0);
  EXPECT_EQ(device["migration_state"], "RUNNING");
  EXPECT_EQ(device["counters"]["commands"], 0);
  EXPECT_TRUE(json["time_ns"].is_number_unsigned());
  EXPECT_EQ(Ctl("stats").out.rfind(std::string(kU1) + " parent=gpu-cpu type=gpu-1of2 open=0", 0),
            0u);
}

TEST_F(TopCliTest, TopRedrawsInATerminalAndQuitsOnQ) {
  const std::string session = "umdev-top-" + std::to_string(::getpid());
  const std::string command = std::string(UMDEVCTL) + " --state-dir " +
                              (dir_ / "state").string() + " top -d 0.2";
  ASSERT_EQ(Run("tmux new-session -d -s " + session + " -x 150 -y 20 '" + command + "'").status,
            0);
  const auto capture = [&] { return Run("tmux capture-pane -p -t " + session).out; };
  std::string screen;
  for (int i = 0; i < 100; ++i) {
    screen = capture();
    if (screen.find("0.0") != std::string::npos) break;  // A second sample: rates shown.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(screen.find("umdev top - "), std::string::npos) << screen;
  EXPECT_NE(screen.find("devices: 1  open: 0"), std::string::npos) << screen;
  EXPECT_NE(screen.find("gpu-cpu      gpu-1of2     6a8bf4d4 idle"), std::string::npos) << screen;
  // Redrawn in place: one header on the screen, however many refreshes.
  EXPECT_EQ(screen.find("umdev top - "), screen.rfind("umdev top - ")) << screen;
  Run("tmux send-keys -t " + session + " q");
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = Run("tmux has-session -t " + session).status != 0;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(gone) << "top did not quit on q";
  if (!gone) Run("tmux kill-session -t " + session);
}

TEST_F(TopCliTest, BatchModePrintsTheRequestedRefreshes) {
  const Output out = Ctl("top -b -n 3 -d 0.05");
  ASSERT_EQ(out.status, 0) << out.out;
  size_t headers = 0;
  for (size_t at = 0; (at = out.out.find("umdev top - ", at)) != std::string::npos; ++at) ++headers;
  EXPECT_EQ(headers, 3u) << out.out;
}

}  // namespace
}  // namespace umdev::test
