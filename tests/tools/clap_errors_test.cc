// clap's usage errors as umdevctl words them; each expectation is what
// Debian's mdevctl 1.4 prints for the same command line (the stock mdevctl
// test compares more of them against the real binary).
#include "umdev/cli/clap_errors.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace umdev::cli {
namespace {

constexpr const char* kGroup = "<--auto|--manual|--addattr <attr_name>|--delattr|--jsonfile <JSONFILE>>";

std::string Check(const std::string& subcommand, std::vector<std::string> used) {
  return CheckArguments("mdevctl", subcommand, used).value_or("valid");
}

TEST(ClapErrorsTest, RendersValuesWithMdevctlsValueNames) {
  EXPECT_EQ(RenderArgument("uuid"), "--uuid <UUID>");
  EXPECT_EQ(RenderArgument("type"), "--type <type>");
  EXPECT_EQ(RenderArgument("addattr"), "--addattr <attr_name>");
  EXPECT_EQ(RenderArgument("value"), "--value <attr_value>");
  EXPECT_EQ(RenderArgument("index"), "--index <INDEX>");
  EXPECT_EQ(RenderArgument("auto"), "--auto");
}

TEST(ClapErrorsTest, ErrorTextHasTheUsageLineOnlyWhenGiven) {
  EXPECT_EQ(ClapErrorText("boom", ""), "error: boom\n\nFor more information, try '--help'.\n");
  EXPECT_EQ(ClapErrorText("boom", "x y"),
            "error: boom\n\nUsage: x y\n\nFor more information, try '--help'.\n");
}

TEST(ClapErrorsTest, BaseUsageNamesTheRequiredArguments) {
  EXPECT_EQ(BaseUsage("list"), "list [OPTIONS]");
  EXPECT_EQ(BaseUsage("stop"), "stop [OPTIONS] --uuid <UUID>");
  EXPECT_EQ(BaseUsage("modify"), std::string("modify [OPTIONS] --uuid <UUID> ") + kGroup);
  EXPECT_EQ(BaseUsage(""), "[OPTIONS] <COMMAND>");
}

TEST(ClapErrorsTest, ValidCommandLinesPass) {
  EXPECT_EQ(Check("stop", {"uuid"}), "valid");
  EXPECT_EQ(Check("modify", {"uuid", "addattr", "value", "index"}), "valid");
  EXPECT_EQ(Check("modify", {"uuid", "live", "defined", "jsonfile"}), "valid");
  EXPECT_EQ(Check("define", {"parent", "type"}), "valid");
  EXPECT_EQ(Check("start", {"uuid"}), "valid");
  EXPECT_EQ(Check("list", {}), "valid");
}

TEST(ClapErrorsTest, MissingUuidListsItFirstThenTheGivenArguments) {
  EXPECT_EQ(Check("stop", {"force"}),
            "error: the following required arguments were not provided:\n  --uuid <UUID>\n\n"
            "Usage: mdevctl stop --uuid <UUID> --force\n\nFor more information, try '--help'.\n");
  EXPECT_EQ(Check("modify", {"auto", "parent"}),
            std::string("error: the following required arguments were not provided:\n  --uuid <UUID>\n\n"
                        "Usage: mdevctl modify --uuid <UUID> --parent <PARENT> ") +
                kGroup + "\n\nFor more information, try '--help'.\n");
}

TEST(ClapErrorsTest, DefineAndStartNeedAUuidOrAParentListedAfterTheGivenArguments) {
  EXPECT_EQ(Check("define", {"auto", "type"}),
            "error: the following required arguments were not provided:\n  --uuid <UUID>\n"
            "  --parent <PARENT>\n\nUsage: mdevctl define --auto --type <type> --uuid <UUID> "
            "--parent <PARENT>\n\nFor more information, try '--help'.\n");
  EXPECT_EQ(Check("start", {}),
            "error: the following required arguments were not provided:\n  --uuid <UUID>\n"
            "  --parent <PARENT>\n\nUsage: mdevctl start --uuid <UUID> --parent <PARENT>\n\n"
            "For more information, try '--help'.\n");
}

TEST(ClapErrorsTest, ModifyNeedsOneActionAndAddattrNeedsAValue) {
  EXPECT_EQ(Check("modify", {"uuid", "index", "value"}),
            std::string("error: the following required arguments were not provided:\n  ") + kGroup +
                "\n\nUsage: mdevctl modify --uuid <UUID> --value <attr_value> --index <INDEX> " +
                kGroup + "\n\nFor more information, try '--help'.\n");
  EXPECT_EQ(Check("modify", {"uuid", "addattr", "parent"}),
            std::string("error: the following required arguments were not provided:\n"
                        "  --value <attr_value>\n\nUsage: mdevctl modify --uuid <UUID> --value "
                        "<attr_value> --parent <PARENT> ") +
                kGroup + "\n\nFor more information, try '--help'.\n");
}

TEST(ClapErrorsTest, ConflictsNameEveryConflictingArgumentAndLeaveThemOutOfTheUsage) {
  EXPECT_EQ(Check("modify", {"uuid", "auto", "manual"}),
            std::string("error: the argument '--auto' cannot be used with '--manual'\n\n"
                        "Usage: mdevctl modify --uuid <UUID> ") +
                kGroup + "\n\nFor more information, try '--help'.\n");
  EXPECT_EQ(Check("modify", {"uuid", "type", "live", "jsonfile"}),
            std::string("error: the argument '--type <type>' cannot be used with:\n  --live\n"
                        "  --jsonfile <JSONFILE>\n\nUsage: mdevctl modify --uuid <UUID> --type <type> ") +
                kGroup + "\n\nFor more information, try '--help'.\n");
  EXPECT_EQ(Check("modify", {"uuid", "addattr", "value", "delattr"}).substr(0, 70),
            "error: the argument '--addattr <attr_name>' cannot be used with '--del");
  EXPECT_EQ(Check("define", {"jsonfile", "type"}),
            "error: the argument '--jsonfile <JSONFILE>' cannot be used with '--type <type>'\n\n"
            "Usage: mdevctl define --jsonfile <JSONFILE>\n\nFor more information, try '--help'.\n");
}

}  // namespace
}  // namespace umdev::cli
