// TwoDaemonProbeTest: a migration source and destination, each a real umdevd
// in its own state directory, and umdev-probe as the vfio-user client of
// either. The test target defines UMDEVD, UMDEVCTL and UMDEV_PROBE.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <utility>

#include "e2e/umdevd_process.h"
#include "umdev/common/uuid.h"

namespace umdev::test {

class TwoDaemonProbeTest : public ::testing::Test {
 protected:
  // |config|: both daemons' configuration. |tmp_pattern|: mkdtemp's, short,
  // as DIR/state/vfio-user/<uuid>.sock must fit sun_path.
  TwoDaemonProbeTest(std::string config, std::string tmp_pattern)
      : config_(std::move(config)), tmp_pattern_(std::move(tmp_pattern)) {}

  void SetUp() override {
    ASSERT_NE(mkdtemp(tmp_pattern_.data()), nullptr);
    dir_ = tmp_pattern_;
    source_.emplace(StartDaemon("src"));
    destination_.emplace(StartDaemon("dst"));
  }

  void TearDown() override {
    if (HasFailure()) {
      if (source_) std::cerr << "source umdevd log:\n" << source_->Log();
      if (destination_) std::cerr << "destination umdevd log:\n" << destination_->Log();
    }
    source_.reset();
    destination_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  UmdevdProcess StartDaemon(const std::string& name) {
    auto daemon = UmdevdProcess::Start(UMDEVD, dir_ / name, config_);
    if (!daemon.has_value()) {
      ADD_FAILURE() << daemon.error().Describe();
      std::abort();
    }
    return std::move(*daemon);
  }

  // Creates an instance of |type| on |parent| of |daemon|; its socket path.
  static std::string CreateInstance(const UmdevdProcess& daemon, const std::string& parent,
                                    const std::string& type) {
    const std::string uuid = Uuid::Generate().ToString();
    auto out = daemon.Ctl(UMDEVCTL, "start -p " + parent + " -t " + type + " -u " + uuid);
    EXPECT_TRUE(out.has_value()) << out.error().Describe();
    return daemon.SocketOf(uuid).string();
  }

  // One umdev-probe command (or, with "-", a script in |script|).
  static ShellOutput Probe(const std::string& socket, const std::string& args,
                           const std::string& script = "") {
    std::string command = std::string(UMDEV_PROBE) + " --socket " + socket + " " + args;
    if (!script.empty()) command = "printf '%s' '" + script + "' | " + command;
    return RunShell(command + " 2>&1");
  }

  std::filesystem::path dir_;
  std::optional<UmdevdProcess> source_;
  std::optional<UmdevdProcess> destination_;

 private:
  const std::string config_;
  std::string tmp_pattern_;
};

}  // namespace umdev::test
