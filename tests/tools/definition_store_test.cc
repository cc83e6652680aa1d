// mdevctl's config format and the on-disk store of definitions.
#include "umdev/control/definition_store.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

namespace umdev::control {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

TEST(DefinitionTest, ParsesMdevctlConfigInOrder) {
  auto definition = ParseDefinition(Json::parse(
      R"({"mdev_type":"mtty-2","start":"auto","attrs":[{"b":"1"},{"a":"2"},{"b":"3"}]})"));
  ASSERT_TRUE(definition.has_value());
  EXPECT_EQ(definition->mdev_type, "mtty-2");
  EXPECT_TRUE(definition->autostart);
  EXPECT_EQ(definition->attrs, (AttributeList{{"b", "1"}, {"a", "2"}, {"b", "3"}}));
  auto manual = ParseDefinition(Json::parse(R"({"mdev_type":"t","start":"manual"})"));
  ASSERT_TRUE(manual.has_value());
  EXPECT_FALSE(manual->autostart);
  EXPECT_TRUE(manual->attrs.empty());
}

TEST(DefinitionTest, RejectsWithMdevctlMessages) {
  auto message = [](const char* text) { return ParseDefinition(Json::parse(text)).error().context; };
  EXPECT_EQ(message(R"({"start":"auto"})"), "invalid json");
  EXPECT_EQ(message(R"({"mdev_type":"t"})"), "invalid json");
  EXPECT_EQ(message(R"([])"), "invalid json");
  EXPECT_EQ(message(R"({"mdev_type":"t","start":"auto","attrs":{}})"),
            "attributes field is not an array");
  EXPECT_EQ(message(R"({"mdev_type":"t","start":"auto","attrs":["a"]})"),
            "invalid JSON format for attribute: not an object");
  EXPECT_EQ(message(R"({"mdev_type":"t","start":"auto","attrs":[{"a":"1","b":"2"}]})"),
            "invalid JSON format for attribute: too many fields");
  EXPECT_EQ(message(R"({"mdev_type":"t","start":"auto","attrs":[{"a":1}]})"),
            "invalid JSON format for attribute: value is not a string");
}

TEST(DefinitionTest, PrintsKeysInMdevctlOrder) {
  EXPECT_EQ(DefinitionToJson({"t", false, {{"x", "y"}}}).dump(),
            R"({"mdev_type":"t","start":"manual","attrs":[{"x":"y"}]})");
}

TEST(DefinitionTest, JsonSyntaxErrorsNameLineAndColumn) {
  EXPECT_EQ(ParseJsonText("").error().context, "EOF while parsing a value at line 1 column 0");
  EXPECT_EQ(ParseJsonText("{\n  x").error().context, "expected value at line 2 column 3");
  EXPECT_TRUE(ParseJsonText(R"({"a": 1})").has_value());
}

class DefinitionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("umdev-defs-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  static Uuid U(const char* text) { return *Uuid::Parse(text); }
  std::string Read(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  fs::path dir_;
};

TEST_F(DefinitionStoreTest, WritesMdevctlFilesAndListsThemSorted) {
  DefinitionStore store(dir_.string());
  const Uuid a = U("a0000000-0000-4000-8000-000000000000");
  const Uuid b = U("b0000000-0000-4000-8000-000000000000");
  ASSERT_TRUE(store.Write("p2", a, {"t", false, {}}, DefinitionStore::Mode::kCreate).has_value());
  ASSERT_TRUE(store.Write("p1", b, {"t", true, {{"k", "v"}}}, DefinitionStore::Mode::kCreate).has_value());
  ASSERT_TRUE(store.Write("p1", a, {"u", false, {}}, DefinitionStore::Mode::kCreate).has_value());
  EXPECT_EQ(Read(dir_ / "p1" / b.ToString()),
            "{\n  \"mdev_type\": \"t\",\n  \"start\": \"auto\",\n"
            "  \"attrs\": [\n    {\n      \"k\": \"v\"\n    }\n  ]\n}");
  const auto all = store.List();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].parent, "p1");
  EXPECT_EQ(all[0].uuid, a);
  EXPECT_EQ(all[1].uuid, b);
  EXPECT_EQ(all[1].definition, (Definition{"t", true, {{"k", "v"}}}));
  EXPECT_EQ(all[2].parent, "p2");
  EXPECT_EQ(store.List("p2").size(), 1u);
  EXPECT_TRUE(store.List("p3").empty());
}

TEST_F(DefinitionStoreTest, CreateRefusesAnExistingDefinitionAndReplaceOverwrites) {
  DefinitionStore store(dir_.string());
  const Uuid a = U("a0000000-0000-4000-8000-000000000000");
  ASSERT_TRUE(store.Write("p", a, {"t", false, {}}, DefinitionStore::Mode::kCreate).has_value());
  EXPECT_EQ(store.Write("p", a, {"u", false, {}}, DefinitionStore::Mode::kCreate).error().code, EEXIST);
  EXPECT_EQ(store.List()[0].definition.mdev_type, "t") << "unchanged";
  ASSERT_TRUE(store.Write("p", a, {"u", true, {}}, DefinitionStore::Mode::kCreateOrReplace).has_value());
  EXPECT_EQ(store.List()[0].definition, (Definition{"u", true, {}}));
  const Uuid b = U("b0000000-0000-4000-8000-000000000000");
  EXPECT_EQ(store.Write("p", b, {"u", true, {}}, DefinitionStore::Mode::kReplace).error().code, ENOENT);
  EXPECT_FALSE(fs::exists(dir_ / "p" / (a.ToString() + ".tmp")));
}

TEST_F(DefinitionStoreTest, RemoveDeletesTheFileAndAnEmptyParentDir) {
  DefinitionStore store(dir_.string());
  const Uuid a = U("a0000000-0000-4000-8000-000000000000");
  ASSERT_TRUE(store.Write("p", a, {"t", false, {}}, DefinitionStore::Mode::kCreate).has_value());
  ASSERT_TRUE(store.Remove("p", a).has_value());
  EXPECT_FALSE(fs::exists(dir_ / "p"));
  EXPECT_EQ(store.Remove("p", a).error().code, ENOENT);
}

TEST_F(DefinitionStoreTest, ParentNamesMustBePlainPathComponents) {
  DefinitionStore store(dir_.string());
  const Uuid a = U("a0000000-0000-4000-8000-000000000000");
  for (const char* bad : {"", ".", "..", "a/b", "../x"}) {
    EXPECT_EQ(store.Write(bad, a, {"t", false, {}}, DefinitionStore::Mode::kCreate).error().code, EINVAL) << bad;
    EXPECT_EQ(store.Remove(bad, a).error().code, EINVAL) << bad;
  }
}

TEST_F(DefinitionStoreTest, SkipsFilesThatAreNotUuidsOrDoNotParse) {
  fs::create_directories(dir_ / "p");
  std::ofstream(dir_ / "p" / "README") << "{}";
  std::ofstream(dir_ / "p" / "a0000000-0000-4000-8000-000000000000") << "{ not json";
  std::ofstream(dir_ / "p" / "b0000000-0000-4000-8000-000000000000") << R"({"start":"auto"})";
  std::ofstream(dir_ / "p" / "c0000000-0000-4000-8000-000000000000")
      << R"({"mdev_type":"t","start":"auto","attrs":[]})";
  DefinitionStore store(dir_.string());
  const auto all = store.List();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].uuid.ToString(), "c0000000-0000-4000-8000-000000000000");
}

TEST_F(DefinitionStoreTest, ConcurrentCreatesOfOneUuidLetExactlyOneWin) {
  DefinitionStore store(dir_.string());
  const Uuid shared = U("a0000000-0000-4000-8000-000000000000");
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        const std::string mine = fmt::format("b{:07x}-0000-4000-8000-{:012x}", t, i);
        EXPECT_TRUE(store.Write("p", *Uuid::Parse(mine), {"t", false, {}},
                                DefinitionStore::Mode::kCreate).has_value());
        (void)store.List();
      }
      if (store.Write("p", shared, {"t" + std::to_string(t), false, {}},
                      DefinitionStore::Mode::kCreate).has_value()) {
        ++wins;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wins.load(), 1);
  EXPECT_EQ(store.List().size(), 81u);
}

TEST_F(DefinitionStoreTest, AMissingDirectoryListsNothing) {
  DefinitionStore store((dir_ / "absent").string());
  EXPECT_TRUE(store.List().empty());
}

}  // namespace
}  // namespace umdev::control

namespace umdev::control {
namespace {

TEST_F(DefinitionStoreTest, UnfinishedWritesOfAKilledDaemonAreRemovedAndNothingElse) {
  DefinitionStore store(dir_.string());
  const Uuid uuid = U("0b5c1e2a-3d4f-4a5b-8c6d-7e8f9a0b1c2d");
  ASSERT_TRUE(store.Write("mtty", uuid, Definition{"mtty-1", true, {}},
                          DefinitionStore::Mode::kCreate));
  // A replace that was killed between the temp file and the rename.
  const fs::path unfinished = dir_ / "mtty" / (uuid.ToString() + ".tmp");
  std::ofstream(unfinished) << "{\"mdev_type\":";
  const fs::path unrelated = dir_ / "mtty" / "notes.tmp";
  std::ofstream(unrelated) << "kept";
  EXPECT_EQ(store.RemoveUnfinishedWrites(), 1u);
  EXPECT_FALSE(fs::exists(unfinished));
  EXPECT_TRUE(fs::exists(unrelated));
  const auto listed = store.List();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].definition.mdev_type, "mtty-1");  // The old one is intact.
}

TEST(DefinitionTest, ANumberThatOverflowsIsEinvalNotAnException) {
  // Found by fuzz_control: nlohmann throws out_of_range for 1e999, which
  // ParseJsonText did not catch; a definition file holding one ended umdevd.
  for (const char* text : {"1e999", R"({"mdev_type":"mtty-1","start":-1e400})",
                           R"({"uuid": 442e4444444444444448888888888})"}) {
    auto parsed = ParseJsonText(text);
    ASSERT_FALSE(parsed.has_value()) << text;
    EXPECT_EQ(parsed.error().code, EINVAL) << text;
  }
}

TEST_F(DefinitionStoreTest, ADefinitionFileThatDoesNotParseIsSkipped) {
  DefinitionStore store(dir_.string());
  const Uuid good = U("0b5c1e2a-3d4f-4a5b-8c6d-7e8f9a0b1c2d");
  ASSERT_TRUE(store.Write("mtty", good, Definition{"mtty-1", true, {}},
                          DefinitionStore::Mode::kCreate));
  std::ofstream(dir_ / "mtty" / "11111111-1111-4111-8111-111111111111")
      << R"({"mdev_type":"mtty-1","start":1e999})";
  const auto listed = store.List();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].uuid, good);
}

}  // namespace
}  // namespace umdev::control
