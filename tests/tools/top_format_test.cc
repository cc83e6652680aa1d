// FormatTop: the live view's table from two stats snapshots.
#include <gtest/gtest.h>

#include "umdev/cli/top.h"

namespace umdev::cli {
namespace {

using Json = nlohmann::json;

Json Device(const std::string& uuid, const std::string& parent, uint64_t busy_ns,
            uint64_t commands, uint64_t bytes) {
  return Json{{"uuid", uuid},
              {"parent", parent},
              {"type", "gpu-1of2"},
              {"open", true},
              {"locked_bytes", 4u << 20},
              {"migration_state", "RUNNING"},
              {"vm", {{"name", "web-1"}, {"pid", 42}, {"accel", "kvm"}, {"uuid", ""}}},
              {"counters",
               {{"busy_ns", busy_ns}, {"commands", commands}, {"bytes", bytes}, {"errors", 3}}}};
}

const std::string kA = "aaaaaaaa-0000-4000-8000-000000000001";
const std::string kB = "bbbbbbbb-0000-4000-8000-000000000002";

TEST(TopFormatTest, RatesComeFromTwoSamplesAndTheFirstShowsDashes) {
  const Json first = {{"time_ns", 1'000'000'000u},
                      {"devices", {Device(kA, "gpu0", 0, 0, 0), Device(kB, "gpu0", 0, 0, 0)}}};
  const Json second = {{"time_ns", 2'000'000'000u},
                       {"devices",
                        {Device(kA, "gpu0", 500'000'000, 100, 1u << 20),
                         Device(kB, "gpu0", 2'000'000'000, 7, 0)}}};
  const std::string initial = FormatTop(nullptr, first, "12:00:00", 200);
  EXPECT_NE(initial.find("umdev top - 12:00:00  devices: 2  open: 2  pinned: 8.0M\n"),
            std::string::npos)
      << initial;
  EXPECT_NE(initial.find("gpu0         gpu-1of2     aaaaaaaa open   web-1                 -        -"),
            std::string::npos)
      << initial;
  const std::string table = FormatTop(&first, second, "12:00:01", 200);
  // 0.5 s busy in 1 s, 100 commands, 1 MiB; the second row's parent is blank.
  EXPECT_NE(table.find("gpu0         gpu-1of2     aaaaaaaa open   web-1              50.0      100      1.0M       3     4.0M RUNNING"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("\n             gpu-1of2     bbbbbbbb open   web-1             100.0        7        0B"),
            std::string::npos)
      << table;
}

TEST(TopFormatTest, DevicesWithoutCountersOrVmShowDashesAndLinesAreCut) {
  const Json sample = {
      {"time_ns", 5u},
      {"devices",
       {Json{{"uuid", kA}, {"parent", "mtty"}, {"type", "mtty-1"}, {"open", false},
             {"locked_bytes", 0}, {"counters", Json::object()}}}}};
  const std::string table = FormatTop(&sample, sample, "00:00:00", 40);
  EXPECT_NE(table.find("mtty         mtty-1       aaaaaaaa idle \n"), std::string::npos) << table;
  for (size_t start = 0, end; (end = table.find('\n', start)) != std::string::npos; start = end + 1) {
    EXPECT_LE(end - start, 40u);
  }
}

TEST(TopFormatTest, ACounterThatWentBackwardsReadsZeroNotHuge) {
  const Json before = {{"time_ns", 0u}, {"devices", {Device(kA, "gpu0", 900, 900, 900)}}};
  const Json after = {{"time_ns", 1'000'000'000u}, {"devices", {Device(kA, "gpu0", 0, 0, 0)}}};
  const std::string table = FormatTop(&before, after, "t", 200);
  EXPECT_NE(table.find(" 0.0        0        0B"), std::string::npos) << table;
}

}  // namespace
}  // namespace umdev::cli
