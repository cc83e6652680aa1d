// umdevctl's output against mdevctl's formats, and its argument parsing.
#include "umdev/cli/mdevctl_format.h"

#include <gtest/gtest.h>

#include "umdev/cli/commands.h"

namespace umdev::cli {
namespace {

using Json = nlohmann::json;

const Json kParents = Json::parse(R"([
  {"name": "mtty", "types": [
    {"id": "mtty-2", "name": "Dual port serial", "description": "two\nports\n",
     "device_api": "vfio-pci", "available_instances": 12},
    {"id": "mtty-1", "name": "Single port serial", "description": "", "device_api": "vfio-pci",
     "available_instances": 24}]},
  {"name": "gpu0", "types": [
    {"id": "umdev_gpu-1", "name": "", "description": "", "device_api": "vfio-pci",
     "available_instances": 0}]}
])");

const char* kA = "a1111111-1111-4111-8111-111111111111";
const char* kB = "b1111111-1111-4111-8111-111111111111";
const char* kC = "c1111111-1111-4111-8111-111111111111";

std::vector<DeviceRow> Rows() {
  return {
      {kB, "mtty", "mtty-2", false, true, false, {}},
      {kA, "mtty", "mtty-1", true, true, true, {{"far_end", "pty"}, {"x", "1"}}},
      {kC, "gpu0", "umdev_gpu-1", false, true, false, {}},
  };
}

TEST(MdevctlFormatTest, TypesTextSortsParentsAndTypesAndFlattensDescriptions) {
  EXPECT_EQ(FormatTypesText(kParents, std::nullopt),
            "gpu0\n"
            "  umdev_gpu-1\n"
            "    Available instances: 0\n"
            "    Device API: vfio-pci\n"
            "mtty\n"
            "  mtty-1\n"
            "    Available instances: 24\n"
            "    Device API: vfio-pci\n"
            "    Name: Single port serial\n"
            "  mtty-2\n"
            "    Available instances: 12\n"
            "    Device API: vfio-pci\n"
            "    Name: Dual port serial\n"
            "    Description: two, ports\n");
  EXPECT_EQ(FormatTypesText(kParents, "none"), "");
}

TEST(MdevctlFormatTest, TypesJsonIsOneObjectOfParents) {
  const Json out = Json::parse(FormatTypesJson(kParents, std::nullopt));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["mtty"][1]["mtty-2"],
            Json::parse(R"({"available_instances":12,"description":"two, ports",
                            "device_api":"vfio-pci","name":"Dual port serial"})"));
  EXPECT_FALSE(out[0]["mtty"][0]["mtty-1"].contains("description"));
  EXPECT_EQ(out[0]["gpu0"][0]["umdev_gpu-1"],
            Json::parse(R"({"available_instances":0,"device_api":"vfio-pci"})"))
      << "an empty name is left out";
  EXPECT_EQ(FormatTypesJson(kParents, "none"), "[]");
}

TEST(MdevctlFormatTest, ListTextSortsByParentThenUuidAndMarksDefinitions) {
  EXPECT_EQ(FormatListText(Rows(), Listing::kActive, false),
            "c1111111-1111-4111-8111-111111111111 gpu0 umdev_gpu-1 manual\n"
            "a1111111-1111-4111-8111-111111111111 mtty mtty-1 auto (defined)\n"
            "b1111111-1111-4111-8111-111111111111 mtty mtty-2 manual\n");
  EXPECT_EQ(FormatListText({}, Listing::kActive, false), "");
}

TEST(MdevctlFormatTest, DefinedListingMarksActiveAndVerbosePrintsAttributes) {
  std::vector<DeviceRow> rows = Rows();
  rows[1].active = false;
  EXPECT_EQ(FormatListText(rows, Listing::kDefined, true),
            "c1111111-1111-4111-8111-111111111111 gpu0 umdev_gpu-1 manual (active)\n"
            "a1111111-1111-4111-8111-111111111111 mtty mtty-1 auto\n"
            "  Attrs:\n"
            "    @{0}: {\"far_end\":\"pty\"}\n"
            "    @{1}: {\"x\":\"1\"}\n"
            "b1111111-1111-4111-8111-111111111111 mtty mtty-2 manual (active)\n");
}

TEST(MdevctlFormatTest, ListJsonMatchesMdevctlPrettyPrinting) {
  std::vector<DeviceRow> rows = Rows();
  rows.erase(rows.begin(), rows.begin() + 2);
  EXPECT_EQ(FormatListJson(rows, false),
            "[\n"
            "  {\n"
            "    \"gpu0\": [\n"
            "      {\n"
            "        \"c1111111-1111-4111-8111-111111111111\": {\n"
            "          \"mdev_type\": \"umdev_gpu-1\",\n"
            "          \"start\": \"manual\",\n"
            "          \"attrs\": []\n"
            "        }\n"
            "      }\n"
            "    ]\n"
            "  }\n"
            "]");
  EXPECT_EQ(FormatListJson({}, false), "[]");
  EXPECT_EQ(FormatListJson({}, true), "[]") << "a UUID that matched nothing";
  const Json all = Json::parse(FormatListJson(Rows(), false));
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0]["mtty"][0][kA]["attrs"], Json::parse(R"([{"far_end":"pty"},{"x":"1"}])"));
}

TEST(MdevctlFormatTest, ListJsonOfOneUuidIsItsDefinition) {
  std::vector<DeviceRow> rows = Rows();
  rows.resize(1);
  EXPECT_EQ(FormatListJson(rows, true),
            "{\n  \"mdev_type\": \"mtty-2\",\n  \"start\": \"manual\",\n  \"attrs\": []\n}");
}

TEST(MdevctlFormatTest, AttrsBlockIsEmptyWithoutAttributes) {
  EXPECT_EQ(FormatAttrs({}), "");
  EXPECT_EQ(FormatAttrs({{"a", "b"}}), "  Attrs:\n    @{0}: {\"a\":\"b\"}\n");
}

TEST(UuidArgumentTest, AcceptsTheFormsMdevctlAccepts) {
  const std::string canonical = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
  for (const char* form : {"83b8f4f2-509f-382f-3c1e-e6bfe0fa1001", "83B8F4F2-509F-382F-3C1E-E6BFE0FA1001",
                           "83b8f4f2509f382f3c1ee6bfe0fa1001", "{83b8f4f2-509f-382f-3c1e-e6bfe0fa1001}",
                           "urn:uuid:83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"}) {
    auto parsed = ParseUuidArgument(form);
    ASSERT_TRUE(parsed.has_value()) << form;
    EXPECT_EQ(parsed->ToString(), canonical) << form;
  }
}

TEST(UuidArgumentTest, RejectsWithTheUuidCratesWording) {
  EXPECT_EQ(ParseUuidArgument("not-a-uuid").error().context,
            "invalid character: expected an optional prefix of `urn:uuid:` followed by "
            "[0-9a-fA-F-], found `n` at 1");
  EXPECT_EQ(ParseUuidArgument("abc").error().context,
            "invalid length: expected length 32 for simple format, found 3");
  EXPECT_EQ(ParseUuidArgument("83b8f4f2-509f-382f-3c1e-e6bfe0fa100").error().context,
            "invalid group length in group 4: expected 12, found 11");
  EXPECT_EQ(ParseUuidArgument("83b8f4f2-509f-382f-3c1e").error().context,
            "invalid group count: expected 5, found 4");
  EXPECT_EQ(ParseUuidArgument("").error().code, EINVAL);
}

}  // namespace
}  // namespace umdev::cli
