// Tree: creates racing through "create" for the last instances.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "fakes/test_parent.h"
#include "umdev/sysfs/tree.h"

namespace umdev::sysfs {
namespace {

using ::umdev::testing::TestParentDriver;

constexpr std::string_view kCreate = "class/mdev_bus/test_parent/mdev_supported_types/test-a/create";

TEST(TreeRaceTest, ExactlyTheAvailableInstancesAreCreated) {
  Registry registry;
  ASSERT_TRUE(registry.RegisterParent(std::make_shared<TestParentDriver>(
                  TestParentDriver::Options{.max_instances = 3})).has_value());
  const Tree tree(registry);
  constexpr int kWriters = 12;
  std::atomic<int> created{0};
  std::atomic<int> refused{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> writers;
  for (int i = 0; i < kWriters; ++i) {
    writers.emplace_back([&] {
      const std::string uuid = Uuid::Generate().ToString() + "\n";
      while (!go.load()) std::this_thread::yield();
      auto result = tree.Write(kCreate, uuid);
      if (result.has_value()) {
        ++created;
      } else if (result.error().code == EUSERS) {
        ++refused;
      }
    });
  }
  go = true;
  for (std::thread& writer : writers) writer.join();
  EXPECT_EQ(created.load(), 3);
  EXPECT_EQ(refused.load(), kWriters - 3);
  EXPECT_EQ(registry.Mdevs().size(), 3u);
  EXPECT_EQ(*tree.Read("class/mdev_bus/test_parent/mdev_supported_types/test-a/available_instances"),
            "0\n");
  EXPECT_EQ(tree.List("bus/mdev/devices")->size(), 3u);
}

TEST(TreeRaceTest, ReadersSeeAConsistentTreeWhileInstancesComeAndGo) {
  Registry registry;
  ASSERT_TRUE(registry.RegisterParent(std::make_shared<TestParentDriver>(
                  TestParentDriver::Options{})).has_value());
  const Tree tree(registry);
  std::atomic<bool> done{false};
  std::thread churn([&] {
    for (int i = 0; i < 200; ++i) {
      const Uuid uuid = Uuid::Generate();
      EXPECT_TRUE(tree.Write(kCreate, uuid.ToString()).has_value());
      EXPECT_TRUE(tree.Write("bus/mdev/devices/" + uuid.ToString() + "/remove", "1").has_value());
    }
    done = true;
  });
  while (!done.load()) {
    auto devices = tree.List("bus/mdev/devices");
    ASSERT_TRUE(devices.has_value());
    for (const std::string& uuid : *devices) {
      // Gone between the listing and the read is the only failure allowed.
      auto type = tree.Resolve("bus/mdev/devices/" + uuid + "/mdev_type");
      if (!type.has_value()) {
        EXPECT_EQ(type.error().code, ENOENT);
      }
    }
  }
  churn.join();
}

}  // namespace
}  // namespace umdev::sysfs
