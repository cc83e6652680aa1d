// GuestShell: commands run in a Linux guest over its serial console. The
// guest's /init (InitScript) sets up, prints a ready line and then runs each
// line the host sends, framing its output with numbered markers, so that
// a test drives a guest step by step and gets each step's status and output.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "e2e/qemu_guest.h"
#include "umdev/common/error.h"

namespace umdev::test {

struct GuestCommandResult {
  int status = -1;     // The shell's $?.
  std::string output;  // stdout and stderr, kernel messages interleaved.
};

// Test thread only; borrows the guest for its lifetime.
class GuestShell {
 public:
  explicit GuestShell(QemuGuest& guest) : guest_(guest) {}

  // A busybox /init: mounts proc, sysfs and devtmpfs, runs |setup| (shell
  // text; a failure in it prints the ready line with FAIL), then serves
  // commands. The guest powers off on `poweroff -f` or at end of input.
  static std::string InitScript(std::string_view setup);

  // Waits for the ready line of the boot in progress (each reboot prints
  // one more). Errors: EIO setup failed (its output in the context);
  // QemuGuest::WaitForLine's.
  Result<void> WaitReady(std::chrono::milliseconds timeout);
  // Sends |command| (one line) to run; returns its number for Wait.
  Result<int> Start(std::string_view command);
  Result<GuestCommandResult> Wait(int id, std::chrono::milliseconds timeout);
  Result<GuestCommandResult> Run(std::string_view command, std::chrono::milliseconds timeout);

 private:
  QemuGuest& guest_;
  int next_id_ = 0;
  size_t ready_from_ = 0;  // Where the console after the last ready line starts.
};

}  // namespace umdev::test
