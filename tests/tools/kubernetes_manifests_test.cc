// The Kubernetes manifests in docs/kubernetes/ checked without a cluster:
// each document decodes with kubectl into its API type (--dry-run=client
// --local), no field is dropped on the way (a misspelt or misplaced field
// would be), and the configuration they carry is what umdevd and the
// device plugin take: the daemon starts with it and offers the types the
// plugin's resources and the QEMU pod ask for.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tools/cli_fixture.h"

namespace umdev::test {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

const fs::path kManifests = fs::path(UMDEV_SOURCE_DIR) / "docs" / "kubernetes";

// The documents of a multi-document YAML file.
std::vector<std::string> Documents(const fs::path& file) {
  std::ifstream in(file);
  std::vector<std::string> documents(1);
  for (std::string line; std::getline(in, line);) {
    if (line == "---") {
      documents.emplace_back();
    } else {
      documents.back() += line + "\n";
    }
  }
  return documents;
}

// Every scalar of |given| is in |decoded| at the same place: what kubectl's
// typed decoding does not know, it drops.
void ExpectKept(const Json& given, const Json& decoded, const std::string& path) {
  if (given.is_object()) {
    ASSERT_TRUE(decoded.is_object()) << path;
    for (const auto& [key, value] : given.items()) {
      ASSERT_TRUE(decoded.contains(key)) << path << "." << key << " is not a field kubectl knows";
      ExpectKept(value, decoded[key], path + "." + key);
    }
  } else if (given.is_array()) {
    ASSERT_TRUE(decoded.is_array()) << path;
    ASSERT_GE(decoded.size(), given.size()) << path;
    for (size_t i = 0; i < given.size(); ++i) ExpectKept(given[i], decoded[i], path + "[" + std::to_string(i) + "]");
  } else if (given.is_number() && decoded.is_string()) {
    EXPECT_EQ(given.dump(), decoded.get<std::string>()) << path;  // A quantity, 1 as "1".
  } else {
    EXPECT_EQ(given, decoded) << path;
  }
}

class KubernetesManifestsTest : public CliFixture {
 protected:
  std::string Binary() const override { return UMDEVD; }
  std::string Config() const override { return R"({"parents":[{"driver":"mtty"}]})"; }

  // Each document of |file|, decoded as kubectl's client does; the ones
  // without a pod template are checked to decode into their type.
  std::map<std::string, Json> Decode(const std::string& file) {
    std::map<std::string, Json> objects;
    int index = 0;
    for (const std::string& document : Documents(kManifests / file)) {
      const std::string path = WriteFile("doc" + std::to_string(index++) + ".yaml", document);
      // Unstructured: what the file says, nothing dropped.
      const Output raw = Run("kubectl label --local --dry-run=client -o json -f " + path + " umdev.io/check=1");
      EXPECT_EQ(raw.status, 0) << file << ": " << raw.out;
      if (raw.status != 0) continue;
      Json given = Json::parse(raw.out);
      given["metadata"]["labels"].erase("umdev.io/check");
      if (given["metadata"]["labels"].empty()) given["metadata"].erase("labels");
      const std::string kind = given["kind"].get<std::string>();
      objects[kind + "/" + given["metadata"]["name"].get<std::string>()] = given;
      // Typed: the object as the API server's types have it.
      const Output typed = Run("kubectl set env --local --dry-run=client -o json -f " + path + " UMDEV_CHECK=1");
      if (kind == "DaemonSet" || kind == "Pod") {
        EXPECT_EQ(typed.status, 0) << file << ": " << typed.out;
        if (typed.status == 0) ExpectKept(given, Json::parse(typed.out), file + ":" + kind);
      } else {
        // Decoded into *v1.KIND, then refused only for having no pods.
        EXPECT_THAT(typed.out, HasSubstr("does not have a pod template: *v1." + kind)) << file;
      }
    }
    return objects;
  }
};

TEST_F(KubernetesManifestsTest, TheDaemonSetDecodesAndItsConfigurationRuns) {
  const auto objects = Decode("daemonset.yaml");
  ASSERT_EQ(objects.size(), 3u);
  const Json& config = objects.at("ConfigMap/umdev-config");
  const Json& daemonset = objects.at("DaemonSet/umdev");
  const Json& pod = daemonset["spec"]["template"]["spec"];
  EXPECT_EQ(daemonset["metadata"]["namespace"], "umdev-system");
  EXPECT_EQ(config["metadata"]["namespace"], "umdev-system");
  // Least privilege: nothing privileged, every capability dropped but what
  // umdevd's pinning needs.
  for (const Json& container : pod["containers"]) {
    const Json& security = container["securityContext"];
    EXPECT_FALSE(security.value("privileged", false)) << container["name"];
    EXPECT_EQ(security["allowPrivilegeEscalation"], false) << container["name"];
    EXPECT_EQ(security["capabilities"]["drop"], Json::array({"ALL"})) << container["name"];
  }
  EXPECT_EQ(pod["containers"][0]["securityContext"]["capabilities"]["add"], Json::array({"IPC_LOCK", "SYS_RESOURCE"}));

  // umdevd starts with the shipped configuration...
  StopDaemon();
  std::ofstream(dir_ / "config.json") << config["data"]["umdevd.json"].get<std::string>();
  daemon_ = StartDaemon();
  const Output types = Run(std::string(UMDEVCTL) + " --state-dir " + (dir_ / "state").string() + " types");
  ASSERT_EQ(types.status, 0) << types.out;
  EXPECT_THAT(types.out, HasSubstr("gpu0\n"));
  EXPECT_THAT(types.out, HasSubstr("  gpu-1of4\n"));
  EXPECT_THAT(types.out, HasSubstr("mtty\n  mtty-1\n"));
  // ...and the plugin takes its own, naming the resources the pod asks for.
  const std::string plugin_config = WriteFile("device-plugin.json", config["data"]["device-plugin.json"]);
  const Output checked = Run(std::string(UMDEV_DEVICE_PLUGIN) + " --check-config --config " + plugin_config);
  EXPECT_EQ(checked.status, 0) << checked.out;
  EXPECT_EQ(checked.out, "umdev.io/gpu0.gpu-1of4: gpu-1of4 on gpu0 x4\numdev.io/mtty.mtty-1: mtty-1 on mtty x2\n");
}

TEST_F(KubernetesManifestsTest, TheQemuPodAsksForADeviceThePluginOffers) {
  const auto objects = Decode("qemu-pod.yaml");
  ASSERT_EQ(objects.size(), 1u);
  const Json& container = objects.at("Pod/vm-with-gpu-slice")["spec"]["containers"][0];
  EXPECT_EQ(container["resources"]["limits"]["umdev.io/gpu0.gpu-1of4"], 1);
  const std::string command = container["args"][0].get<std::string>();
  EXPECT_THAT(command, HasSubstr("vfio-user-pci"));
  EXPECT_THAT(command, HasSubstr("$UMDEV_SOCKETS"));
  EXPECT_THAT(command, HasSubstr("share=on"));
}

TEST_F(KubernetesManifestsTest, AMisspeltFieldIsCaught) {
  // The check itself: a field kubectl's types do not have is reported.
  WriteFile("bad.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n"
            "  - name: c\n    image: i\n    securityContxt: {}\n");
  const Output raw = Run("kubectl label --local --dry-run=client -o json -f " + (dir_ / "bad.yaml").string() + " a=b");
  const Output typed = Run("kubectl set env --local --dry-run=client -o json -f " + (dir_ / "bad.yaml").string() + " A=b");
  ASSERT_EQ(raw.status, 0) << raw.out;
  ASSERT_EQ(typed.status, 0) << typed.out;
  EXPECT_FALSE(Json::parse(typed.out)["spec"]["containers"][0].contains("securityContxt"));
  EXPECT_TRUE(Json::parse(raw.out)["spec"]["containers"][0].contains("securityContxt"));
  // And a value of the wrong type does not decode at all.
  WriteFile("wrong.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: 3\n");
  EXPECT_NE(Run("kubectl set env --local --dry-run=client -o json -f " + (dir_ / "wrong.yaml").string() + " A=b").status, 0);
}

}  // namespace
}  // namespace umdev::test
