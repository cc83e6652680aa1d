// umdevctl's mdevctl commands against a running daemon: define, undefine,
// modify, start of definitions and JSON files, every error path with
// mdevctl's message and exit code, persistence and autostart across a
// restart, lsmdev and qemu-args.
#include <nlohmann/json.hpp>

#include "cli_fixture.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr const char* kU1 = "11111111-1111-4111-8111-111111111111";
constexpr const char* kU2 = "22222222-2222-4222-8222-222222222222";

std::string U1(const std::string& rest) { return std::string(kU1) + rest; }

using MdevctlCliTest = CliFixture;

TEST_F(MdevctlCliTest, DefineWritesMdevctlConfigAndUndefineRemovesIt) {
  const Output define = Ctl(U1("").insert(0, "define -p parent0 -t test-a -u "));
  ASSERT_EQ(define.status, 0) << define.out;
  EXPECT_EQ(define.out, "");
  EXPECT_EQ(ReadFile(fs::path(Definitions()) / "parent0" / kU1),
            "{\n  \"mdev_type\": \"test-a\",\n  \"start\": \"manual\",\n  \"attrs\": []\n}");
  EXPECT_EQ(Ctl("list -d").out, U1(" parent0 test-a manual\n"));
  EXPECT_EQ(Ctl("list").out, "") << "defining starts nothing";
  const Output again = Ctl(U1("").insert(0, "define -p parent0 -t test-b -u "));
  EXPECT_EQ(again.status, 1);
  EXPECT_EQ(again.out, U1(" on parent0 already defined\n").insert(0, "Error: Device "));
  ASSERT_EQ(Ctl(U1("").insert(0, "undefine -u ")).status, 0);
  EXPECT_EQ(Ctl("list -d").out, "");
  const Output gone = Ctl(U1("").insert(0, "undefine -u "));
  EXPECT_EQ(gone.status, 1);
  EXPECT_EQ(gone.out, "Error: No devices match the specified uuid\n");
}

TEST_F(MdevctlCliTest, DefineWithoutUuidPrintsTheGeneratedOneAndAutoMarksIt) {
  const Output define = Ctl("define -p parent1 -t test-b --auto");
  ASSERT_EQ(define.status, 0) << define.out;
  ASSERT_EQ(define.out.size(), 37u);
  EXPECT_EQ(Ctl("list -d").out, define.out.substr(0, 36) + " parent1 test-b auto\n");
}

TEST_F(MdevctlCliTest, DefineNeedsParentAndType) {
  EXPECT_EQ(Ctl(U1("").insert(0, "define -u ")).out, "Error: No parent specified\n");
  EXPECT_EQ(Ctl(U1(" -t test-a").insert(0, "define -u ")).out, "Error: No parent specified\n");
  EXPECT_EQ(Ctl(U1(" -p parent0").insert(0, "define -u ")).out, "Error: No type specified\n");
  const Output neither = Ctl("define -t test-a");
  EXPECT_EQ(neither.status, 2);
  EXPECT_NE(neither.out.find("error: the following required arguments were not provided"),
            std::string::npos);
  EXPECT_EQ(Ctl("list -d").out, "") << "nothing was written";
}

TEST_F(MdevctlCliTest, DefiningARunningDeviceTakesItsParentAndType) {
  ASSERT_EQ(Ctl(U1("").insert(0, "start -p parent1 -t test-b -u ")).status, 0);
  EXPECT_EQ(Ctl(U1("").insert(0, "define -u ")).status, 0);
  EXPECT_EQ(Ctl("list").out, U1(" parent1 test-b manual (defined)\n"));
  EXPECT_EQ(Ctl("list -d").out, U1(" parent1 test-b manual (active)\n"));
}

TEST_F(MdevctlCliTest, DefineFromJsonFileAndItsErrors) {
  const std::string file = WriteFile(
      "dev.json", R"({"mdev_type":"test-a","start":"auto","attrs":[{"b":"2"},{"a":"1"}]})");
  ASSERT_EQ(Ctl(U1(" -p parent0 --jsonfile " + file).insert(0, "define -u ")).status, 0);
  EXPECT_EQ(Json::parse(Ctl(U1("").insert(0, "list -d --dumpjson -u ")).out),
            Json::parse(ReadFile(file)));
  EXPECT_EQ(Ctl(U1(" -p parent0 --jsonfile " + file).insert(0, "define -u ")).out,
            U1("\n").insert(0, "Error: Cowardly refusing to overwrite existing config for parent0/"));
  EXPECT_EQ(Ctl(U1(" --jsonfile " + file).insert(0, "define -u ")).out,
            "Error: Parent device required to define device via \"" + file + "\"\n");
  const std::string missing = (dir_ / "missing.json").string();
  EXPECT_EQ(Ctl("define -p parent0 --jsonfile " + missing).out,
            "Error: Unable to read file \"" + missing +
                "\"\n\nCaused by:\n    No such file or directory (os error 2)\n");
  EXPECT_EQ(Ctl("define -p parent0 --jsonfile " + WriteFile("bad.json", "x")).out,
            "Error: expected value at line 1 column 1\n");
  EXPECT_EQ(Ctl("define -p parent0 --jsonfile " + WriteFile("bad.json", R"({"start":"auto"})")).out,
            "Error: invalid json\n");
  EXPECT_EQ(Ctl("define -p parent0 --jsonfile " +
                WriteFile("bad.json", R"({"mdev_type":"t","start":"auto","attrs":[{"a":"1","b":"2"}]})"))
                .out,
            "Error: invalid JSON format for attribute: too many fields\n");
  EXPECT_EQ(Ctl("define -p parent0 -t test-a --jsonfile " + file).status, 2) << "conflicting options";
  EXPECT_EQ(Ctl("list -d").out, U1(" parent0 test-a auto\n")) << "only the first define stuck";
}

TEST_F(MdevctlCliTest, ModifyEditsAttributesAndStartMode) {
  const std::string u = kU1;
  ASSERT_EQ(Ctl("define -p parent0 -t test-a -u " + u).status, 0);
  EXPECT_EQ(Ctl("modify -u " + u + " --addattr x --value 1").status, 0);
  EXPECT_EQ(Ctl("modify -u " + u + " --addattr y --value 2").status, 0);
  EXPECT_EQ(Ctl("modify -u " + u + " --addattr z --value 0 -i 0").status, 0);
  EXPECT_EQ(Ctl("modify -u " + u + " --auto").status, 0);
  EXPECT_EQ(Ctl("list -d -v").out, u + " parent0 test-a auto\n"
                                       "  Attrs:\n"
                                       "    @{0}: {\"z\":\"0\"}\n"
                                       "    @{1}: {\"x\":\"1\"}\n"
                                       "    @{2}: {\"y\":\"2\"}\n");
  EXPECT_EQ(Ctl("modify -u " + u + " --delattr -i 1").status, 0);
  EXPECT_EQ(Ctl("modify -u " + u + " --delattr").status, 0);
  EXPECT_EQ(Ctl("modify -u " + u + " --manual").status, 0);
  EXPECT_EQ(Ctl("list -d -v").out, u + " parent0 test-a manual\n  Attrs:\n    @{0}: {\"z\":\"0\"}\n");
  const Output bad_index = Ctl("modify -u " + u + " --delattr -i 5");
  EXPECT_EQ(bad_index.status, 1);
  EXPECT_EQ(bad_index.out, "Error: Attribute index 5 is invalid\n  Attrs:\n    @{0}: {\"z\":\"0\"}\n\n");
  EXPECT_EQ(Ctl("modify -u " + u + " --delattr").status, 0);
  EXPECT_EQ(Ctl("modify -u " + u + " --addattr a --value b -i 1").out,
            "Error: Attribute index 1 is invalid\nDevice " + u + " has no attributes\n");
  EXPECT_EQ(Ctl("modify -u " + u + " -t test-b --auto").status, 0);
  EXPECT_EQ(Ctl("list -d").out, u + " parent0 test-b auto\n");
}

TEST_F(MdevctlCliTest, ModifyErrors) {
  const std::string u = kU1;
  EXPECT_EQ(Ctl("modify -u " + u + " --auto").out, "Error: Mediated device " + u + " is not defined\n");
  EXPECT_EQ(Ctl("modify -u " + u + " -p parent0 --auto").out,
            "Error: Mediated device parent0/" + u + " is not defined\n");
  const Output nothing = Ctl("modify -u " + u);
  EXPECT_EQ(nothing.status, 2);
  EXPECT_NE(nothing.out.find("<--auto|--manual|--addattr <attr_name>|--delattr|--jsonfile <JSONFILE>>"),
            std::string::npos);
  EXPECT_EQ(Ctl("modify -u " + u + " --addattr x").status, 2) << "--addattr needs --value";
  EXPECT_EQ(Ctl("modify -u " + u + " --auto --manual").status, 2);
  EXPECT_EQ(Ctl("modify -u " + u + " --live --auto").out,
            "Error: 'auto' cannot be changed on active mdev\n")
      << "mdevctl 1.4 refuses --live's other options before it looks for the device";
  ASSERT_EQ(Ctl("define -p parent0 -t test-a -u " + u).status, 0);
  ASSERT_EQ(Ctl("define -p parent1 -t test-a -u " + u).status, 0);
  EXPECT_EQ(Ctl("modify -u " + u + " --auto").out,
            "Error: Multiple definitions found for " + u + ", specify a parent\n");
  EXPECT_EQ(Ctl("modify -u " + u + " -p parent1 --auto").status, 0);
  EXPECT_EQ(Ctl("modify -u " + u + " --jsonfile " + WriteFile("d.json", "{}")).out,
            "Error: Parent device required to modify device via json file\n");
  EXPECT_EQ(Ctl("modify -u " + u + " --live --jsonfile " + WriteFile("d.json", "{}")).out,
            "Error: Mediated device " + u + " is not active\n");
  EXPECT_EQ(Ctl("list -d").out,
            u + " parent0 test-a manual\n" + u + " parent1 test-a auto\n");
}

TEST_F(MdevctlCliTest, ModifyFromJsonFileReplacesTheDefinition) {
  const std::string u = kU1;
  ASSERT_EQ(Ctl("define -p parent0 -t test-a -u " + u).status, 0);
  const std::string file = WriteFile("d.json", R"({"mdev_type":"test-b","start":"auto","attrs":[{"k":"v"}]})");
  EXPECT_EQ(Ctl("modify -u " + u + " -p parent0 --jsonfile " + file).status, 0);
  EXPECT_EQ(Json::parse(ReadFile(fs::path(Definitions()) / "parent0" / u)), Json::parse(ReadFile(file)));
}

TEST_F(MdevctlCliTest, StartOfADefinedDevice) {
  const std::string u = kU1;
  ASSERT_EQ(Ctl("define -p parent0 -t test-a -u " + u + " --auto").status, 0);
  const Output started = Ctl("start -u " + u);
  ASSERT_EQ(started.status, 0) << started.out;
  EXPECT_EQ(started.out, "");
  EXPECT_EQ(Ctl("list").out, u + " parent0 test-a auto (defined)\n");
  EXPECT_EQ(Ctl("list --dumpjson -u " + u).out,
            "{\n  \"mdev_type\": \"test-a\",\n  \"start\": \"auto\",\n  \"attrs\": []\n}");
  EXPECT_EQ(Ctl("start -u " + u).out, "Error: Device already exists\n");
  EXPECT_EQ(Ctl("start -u " + u + " -t test-b").out,
            "Error: Device " + u + " already exists on parent parent0 with type test-a\n");
  ASSERT_EQ(Ctl("stop -u " + u).status, 0);
  EXPECT_EQ(Ctl("list").out, "");
}

TEST_F(MdevctlCliTest, StartNeedsEnoughToIdentifyTheDevice) {
  const std::string u = kU1;
  EXPECT_EQ(Ctl("start -u " + u).out, "Error: Device is insufficiently specified\n");
  EXPECT_EQ(Ctl("start -u " + u + " -t test-a").out, "Error: can't provide type without parent\n");
  EXPECT_EQ(Ctl("start -p parent0").out, "Error: Device is insufficiently specified\n");
  EXPECT_EQ(Ctl("start -t test-a").status, 2);
  ASSERT_EQ(Ctl("define -p parent0 -t test-a -u " + u).status, 0);
  ASSERT_EQ(Ctl("define -p parent1 -t test-b -u " + u).status, 0);
  EXPECT_EQ(Ctl("start -u " + u).out,
            "Error: Multiple definitions found for device " + u + ". Please specify a parent.\n");
  ASSERT_EQ(Ctl("start -u " + u + " -p parent1").status, 0);
  EXPECT_EQ(Ctl("list").out, u + " parent1 test-b manual (defined)\n");
  ASSERT_EQ(Ctl("undefine -u " + u).status, 0) << "both parents' definitions";
  EXPECT_EQ(Ctl("list -d").out, "");
}

TEST_F(MdevctlCliTest, StartFromJsonFile) {
  const std::string file = WriteFile("d.json", R"({"mdev_type":"test-b","start":"manual"})");
  const Output started = Ctl("start -p parent1 --jsonfile " + file);
  ASSERT_EQ(started.status, 0) << started.out;
  ASSERT_EQ(started.out.size(), 37u);
  EXPECT_EQ(Ctl("list").out, started.out.substr(0, 36) + " parent1 test-b manual\n");
  EXPECT_EQ(Ctl("start -u " + std::string(kU2) + " --jsonfile " + file).out,
            "Error: Parent device required to start device via json file\n");
  const std::string missing = (dir_ / "none.json").string();
  EXPECT_EQ(Ctl("start -p parent1 --jsonfile " + missing).out,
            "Error: Unable to read jsonfile \"" + missing +
                "\"\n\nCaused by:\n    No such file or directory (os error 2)\n");
  EXPECT_EQ(Ctl("start -p parent1 --jsonfile " + WriteFile("e.json", "")).out,
            "Error: EOF while parsing a value at line 1 column 0\n");
}

TEST_F(MdevctlCliTest, BadStartsChangeNothing) {
  const std::string u = kU1;
  const std::string types_before = Ctl("types --dumpjson").out;
  EXPECT_EQ(Ctl("start -p nosuch -t test-a").out, "Error: Unable to find parent device 'nosuch'\n");
  EXPECT_EQ(Ctl("start -p PARENT1 -t test-a").out,
            "Error: Unable to find parent device 'PARENT1'. Did you mean 'parent1'?\n");
  EXPECT_EQ(Ctl("start -p parent1 -t nosuch").out, "Error: Parent parent1 does not support mdev type nosuch\n");
  ASSERT_EQ(Ctl("define -p nosuch -t test-a -u " + u).status, 0) << "mdevctl defines without checking";
  const Output defined = Ctl("start -u " + u);
  EXPECT_EQ(defined.status, 1);
  EXPECT_EQ(defined.out, "Error: Unable to find parent device 'nosuch'\n");
  EXPECT_EQ(Ctl("list").out, "");
  EXPECT_EQ(Ctl("types --dumpjson").out, types_before);
}

TEST_F(MdevctlCliTest, NoInstancesLeft) {
  ASSERT_EQ(Ctl("start -p parent0 -t test-a").status, 0);
  ASSERT_EQ(Ctl("start -p parent0 -t test-a").status, 0);
  const Output full = Ctl("start -p parent0 -t test-b");
  EXPECT_EQ(full.status, 1);
  EXPECT_EQ(full.out, "Error: No available instances of test-b on parent0\n");
}

TEST_F(MdevctlCliTest, DefinitionsPersistAndAutoOnesStartAfterARestart) {
  ASSERT_EQ(Ctl("define -p parent0 -t test-a --auto -u " + std::string(kU1)).status, 0);
  ASSERT_EQ(Ctl("define -p parent1 -t test-b -u " + std::string(kU2)).status, 0);
  ASSERT_NO_FATAL_FAILURE(RestartDaemon());
  EXPECT_EQ(Ctl("list").out, U1(" parent0 test-a auto (defined)\n"));
  EXPECT_EQ(Ctl("list -d").out,
            U1(" parent0 test-a auto (active)\n") + kU2 + " parent1 test-b manual\n");
  // A transient device is gone after a restart; its definition is not.
  ASSERT_EQ(Ctl("start -u " + std::string(kU2)).status, 0);
  ASSERT_EQ(Ctl("modify -u " + std::string(kU1) + " --manual").status, 0);
  ASSERT_NO_FATAL_FAILURE(RestartDaemon());
  EXPECT_EQ(Ctl("list").out, "");
  EXPECT_EQ(Ctl("list -d").out,
            U1(" parent0 test-a manual\n") + kU2 + " parent1 test-b manual\n");
}

TEST_F(MdevctlCliTest, LsmdevIsListUnderAnotherName) {
  const std::string lsmdev = (fs::path(UMDEVCTL).parent_path() / "lsmdev").string();
  ASSERT_TRUE(fs::exists(lsmdev));
  ASSERT_EQ(Ctl("define -p parent0 -t test-a -u " + std::string(kU1)).status, 0);
  const std::string state = " --state-dir " + (dir_ / "state").string();
  EXPECT_EQ(Run(lsmdev + state + " -d").out, Ctl("list -d").out);
  EXPECT_EQ(Run(lsmdev + state + " --defined --dumpjson").out, Ctl("list -d --dumpjson").out);
  EXPECT_EQ(Run(lsmdev + state).out, "");
  EXPECT_EQ(Run(lsmdev + state + " types").status, 2) << "lsmdev takes no subcommand";
}

TEST_F(MdevctlCliTest, QemuArgsAttachTheDevicesSocket) {
  const std::string u = kU1;
  ASSERT_EQ(Ctl("start -p parent0 -t test-a -u " + u).status, 0);
  const std::string socket = (dir_ / "state" / "vfio-user" / (u + ".sock")).string();
  const Output args = Ctl("qemu-args " + u + " -m 2G");
  ASSERT_EQ(args.status, 0) << args.out;
  EXPECT_EQ(args.out,
            "-object memory-backend-memfd,id=mem,size=2G,share=on -machine memory-backend=mem \\\n"
            "-device '{\"driver\":\"vfio-user-pci\",\"socket\":{\"path\":\"" + socket +
                "\",\"type\":\"unix\"}}'\n");
  EXPECT_TRUE(fs::exists(socket));
  EXPECT_EQ(Ctl("qemu-args --no-memory " + u).out,
            "-device '{\"driver\":\"vfio-user-pci\",\"socket\":{\"path\":\"" + socket +
                "\",\"type\":\"unix\"}}'\n");
  EXPECT_EQ(Ctl("qemu-args --no-memory --socket-dir /srv/sockets " + u).out,
            "-device '{\"driver\":\"vfio-user-pci\",\"socket\":{\"path\":\"/srv/sockets/" + u +
                ".sock\",\"type\":\"unix\"}}'\n");
  EXPECT_EQ(Ctl("qemu-args " + std::string(kU2)).out,
            "Error: Mediated device " + std::string(kU2) + " is not active\n");
}

TEST_F(MdevctlCliTest, ADefinitionsBoundVmUuidBindsTheDeviceAndQemuArgsNamesIt) {
  const std::string u = kU1;
  const std::string vm = "0a0b0c0d-1e2f-4a5b-8c6d-7e8f90a1b2c3";
  ASSERT_EQ(Ctl("define -p parent0 -t test-a -u " + u).status, 0);
  ASSERT_EQ(Ctl("modify -u " + u + " --addattr bound_vm_uuid --value " + vm).status, 0);
  const Output started = Ctl("start -u " + u);
  ASSERT_EQ(started.status, 0) << started.out;
  EXPECT_EQ(Ctl("attr -u " + u + " -n bound_vm_uuid").out, vm + "\n");
  EXPECT_EQ(Ctl("qemu-args --no-memory " + u).out.rfind("-uuid " + vm + " \\\n-device ", 0), 0u);
  // Closed, the VM attributes are empty; a value that is not a UUID is refused.
  EXPECT_EQ(Ctl("attr -u " + u + " -n vm_uuid").out, "\n");
  EXPECT_NE(Ctl("attr -u " + u + " -n bound_vm_uuid -v nope").status, 0);
  EXPECT_NE(Ctl("attr -u " + u + " -n vm_pid -v 1").status, 0);
}

// mtty (the real umdevd) has attributes: far_end (writable) and pty.
class MttyCliTest : public CliFixture {
 protected:
  std::string Binary() const override { return UMDEVD; }
  std::string Config() const override { return R"({"parents":[{"driver":"mtty","name":"mtty"}]})"; }
};

TEST_F(MttyCliTest, AttributesAreWrittenInOrderOnStart) {
  const std::string u = kU1;
  ASSERT_EQ(Ctl("define -p mtty -t mtty-1 -u " + u).status, 0);
  ASSERT_EQ(Ctl("modify -u " + u + " --addattr far_end --value pty").status, 0);
  ASSERT_EQ(Ctl("modify -u " + u + " --addattr far_end --value loopback").status, 0);
  const Output started = Ctl("start -u " + u);
  ASSERT_EQ(started.status, 0) << started.out;
  EXPECT_EQ(Ctl("attr -u " + u + " -n far_end").out, "loopback\n") << "the last write wins";
}

TEST_F(MttyCliTest, ARefusedAttributeStopsTheDeviceAgain) {
  const std::string u = kU1;
  ASSERT_EQ(Ctl("define -p mtty -t mtty-1 -u " + u).status, 0);
  ASSERT_EQ(Ctl("modify -u " + u + " --addattr far_end --value bogus").status, 0);
  const Output refused = Ctl("start -u " + u);
  EXPECT_EQ(refused.status, 1);
  EXPECT_EQ(refused.out,
            "Error: Failed to write bogus to attribute far_end\n\n"
            "Caused by:\n    Invalid argument (os error 22)\n");
  EXPECT_EQ(Ctl("list").out, "");
  ASSERT_EQ(Ctl("modify -u " + u + " --delattr").status, 0);
  ASSERT_EQ(Ctl("modify -u " + u + " --addattr nosuch --value 1").status, 0);
  EXPECT_EQ(Ctl("start -u " + u).out, "Error: Invalid attribute 'nosuch'\n");
  EXPECT_EQ(Ctl("list").out, "");
  EXPECT_EQ(Ctl("start -p mtty -t mtty-1 --attr pty=x").out,
            "Error: Failed to write x to attribute pty\n\n"
            "Caused by:\n    Permission denied (os error 13)\n");
  EXPECT_EQ(Ctl("list").out, "");
}

TEST_F(MttyCliTest, AutostartAppliesAttributesAfterARestart) {
  const std::string u = kU1;
  ASSERT_EQ(Ctl("define -p mtty -t mtty-2 --auto -u " + u).status, 0);
  ASSERT_EQ(Ctl("modify -u " + u + " --addattr far_end --value pty").status, 0);
  ASSERT_NO_FATAL_FAILURE(RestartDaemon());
  EXPECT_EQ(Ctl("list").out, u + " mtty mtty-2 auto (defined)\n");
  EXPECT_EQ(Ctl("attr -u " + u + " -n far_end").out, "pty\n");
}

TEST_F(MttyCliTest, ModifyLiveWritesTheRunningDeviceAndDefinedTheConfig) {
  const std::string u = kU1;
  ASSERT_EQ(Ctl("define -p mtty -t mtty-1 -u " + u).status, 0);
  ASSERT_EQ(Ctl("start -u " + u).status, 0);
  const std::string file =
      WriteFile("live.json", R"({"mdev_type":"mtty-1","start":"manual","attrs":[{"far_end":"pty"}]})");
  const Output live = Ctl("modify -u " + u + " --live --jsonfile " + file);
  ASSERT_EQ(live.status, 0) << live.out;
  EXPECT_EQ(Ctl("attr -u " + u + " -n far_end").out, "pty\n");
  EXPECT_EQ(Ctl("list -d -v").out, u + " mtty mtty-1 manual (active)\n") << "--live alone keeps the config";
  ASSERT_EQ(Ctl("modify -u " + u + " --live --defined --jsonfile " + file).status, 0);
  EXPECT_EQ(Ctl("list -d -v").out,
            u + " mtty mtty-1 manual (active)\n  Attrs:\n    @{0}: {\"far_end\":\"pty\"}\n");
  const std::string other = WriteFile("other.json", R"({"mdev_type":"mtty-2","start":"manual"})");
  EXPECT_EQ(Ctl("modify -u " + u + " --live --jsonfile " + other).out,
            "Error: 'type' cannot be changed on active mdev\n");
}

}  // namespace
}  // namespace umdev::test
