// DeviceBoard across threads: a waiting stream sees each change, a publish
// that changes nothing wakes no one, and Close() ends every wait.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "umdev/device_plugin/device_board.h"

namespace umdev::device_plugin {
namespace {

using std::chrono::milliseconds;

std::vector<DeviceState> Devices(bool healthy) { return {{"a", "p", healthy, healthy ? "" : "not running"}}; }

TEST(DeviceBoardTest, OnlyChangesBumpTheVersion) {
  DeviceBoard board(2);
  EXPECT_EQ(board.Get(0).version, 0u);  // Nothing published yet.
  board.Publish(0, {});
  EXPECT_EQ(board.Get(0).version, 1u);  // The first publish counts, even empty.
  board.Publish(0, {});
  EXPECT_EQ(board.Get(0).version, 1u);
  board.Publish(0, Devices(true));
  EXPECT_EQ(board.Get(0).version, 2u);
  EXPECT_EQ(board.Get(1).version, 0u);  // Resources are separate.
  EXPECT_FALSE(board.WaitForChange(0, 2, milliseconds(20)).has_value());
  EXPECT_EQ(board.WaitForChange(0, 1, milliseconds(20))->devices, Devices(true));
}

TEST(DeviceBoardTest, AWaiterSeesEveryChangeFromAnotherThread) {
  DeviceBoard board(1);
  board.Publish(0, Devices(true));
  std::atomic<int> seen_unhealthy{0};
  // The stream has sent what it read before the change (as ListAndWatch has).
  const uint64_t sent = board.Get(0).version;
  std::thread stream([&] {
    uint64_t version = sent;
    while (seen_unhealthy.load() == 0) {
      auto changed = board.WaitForChange(0, version, milliseconds(5000));
      ASSERT_TRUE(changed.has_value());
      version = changed->version;
      if (!changed->devices.at(0).healthy) seen_unhealthy = 1;
    }
  });
  board.Publish(0, Devices(false));
  stream.join();
  EXPECT_EQ(seen_unhealthy.load(), 1);
}

TEST(DeviceBoardTest, CloseEndsEveryWait) {
  DeviceBoard board(1);
  board.Publish(0, Devices(true));
  std::vector<std::thread> streams;
  std::atomic<int> ended{0};
  for (int i = 0; i < 4; ++i) {
    streams.emplace_back([&] {
      EXPECT_FALSE(board.WaitForChange(0, board.Get(0).version, milliseconds(60000)).has_value());
      ++ended;
    });
  }
  board.Close();
  for (std::thread& t : streams) t.join();
  EXPECT_EQ(ended.load(), 4);
  EXPECT_TRUE(board.closed());
}

}  // namespace
}  // namespace umdev::device_plugin
