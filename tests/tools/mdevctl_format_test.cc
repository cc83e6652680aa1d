// umdevctl's output against mdevctl's formats.
#include "umdev/cli/mdevctl_format.h"

#include <gtest/gtest.h>

namespace umdev::cli {
namespace {

using Json = nlohmann::json;

const Json kParents = Json::parse(R"([
  {"name": "mtty", "types": [
    {"id": "mtty-1", "name": "Single port serial", "description": "", "device_api": "vfio-pci",
     "available_instances": 24},
    {"id": "mtty-2", "name": "Dual port serial", "description": "two\nports",
     "device_api": "vfio-pci", "available_instances": 12}]},
  {"name": "gpu0", "types": [
    {"id": "umdev_gpu-1", "name": "1", "description": "", "device_api": "vfio-pci",
     "available_instances": 0}]}
])");

const Json kMdevs = Json::parse(R"([
  {"uuid": "b1111111-1111-4111-8111-111111111111", "parent": "mtty", "type": "mtty-2"},
  {"uuid": "a1111111-1111-4111-8111-111111111111", "parent": "mtty", "type": "mtty-1"},
  {"uuid": "c1111111-1111-4111-8111-111111111111", "parent": "gpu0", "type": "umdev_gpu-1"}
])");

TEST(MdevctlFormatTest, TypesTextMatchesMdevctl) {
  EXPECT_EQ(FormatTypesText(kParents, "mtty"),
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
}

TEST(MdevctlFormatTest, TypesJsonIsAListOfParentObjects) {
  const Json out = Json::parse(FormatTypesJson(kParents, std::nullopt));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]["mtty"][1]["mtty-2"],
            Json::parse(R"({"available_instances":12,"description":"two, ports",
                            "device_api":"vfio-pci","name":"Dual port serial"})"));
  EXPECT_FALSE(out[0]["mtty"][0]["mtty-1"].contains("description"));
  EXPECT_EQ(FormatTypesJson(kParents, "none"), "[]\n");
}

TEST(MdevctlFormatTest, ListTextGroupsByParentInNameOrder) {
  EXPECT_EQ(FormatListText(kMdevs, std::nullopt, std::nullopt),
            "c1111111-1111-4111-8111-111111111111 gpu0 umdev_gpu-1 manual\n"
            "b1111111-1111-4111-8111-111111111111 mtty mtty-2 manual\n"
            "a1111111-1111-4111-8111-111111111111 mtty mtty-1 manual\n");
  EXPECT_EQ(FormatListText(kMdevs, std::nullopt, "gpu0"),
            "c1111111-1111-4111-8111-111111111111 gpu0 umdev_gpu-1 manual\n");
  EXPECT_EQ(FormatListText(Json::array(), std::nullopt, std::nullopt), "");
}

TEST(MdevctlFormatTest, ListJsonMatchesMdevctlPrettyPrinting) {
  EXPECT_EQ(FormatListJson(kMdevs, std::nullopt, "gpu0"),
            "[\n"
            "  {\n"
            "    \"gpu0\": [\n"
            "      {\n"
            "        \"c1111111-1111-4111-8111-111111111111\": {\n"
            "          \"attrs\": [],\n"
            "          \"mdev_type\": \"umdev_gpu-1\",\n"
            "          \"start\": \"manual\"\n"
            "        }\n"
            "      }\n"
            "    ]\n"
            "  }\n"
            "]\n");
  EXPECT_EQ(FormatListJson(Json::array(), std::nullopt, std::nullopt), "[]\n");
}

TEST(MdevctlFormatTest, ListJsonOfOneUuidIsItsDefinition) {
  EXPECT_EQ(FormatListJson(kMdevs, "a1111111-1111-4111-8111-111111111111", std::nullopt),
            "{\n  \"attrs\": [],\n  \"mdev_type\": \"mtty-1\",\n  \"start\": \"manual\"\n}\n");
}

}  // namespace
}  // namespace umdev::cli
