// GuestShell: the command loop in the guest's /init and its framing.
#include "e2e/guest_shell.h"

#include <fmt/format.h>

namespace umdev::test {
namespace {

constexpr std::string_view kReady = "@@UMDEV-SHELL-READY";
constexpr std::string_view kBegin = "@@UMDEV-BEGIN-";
constexpr std::string_view kEnd = "@@UMDEV-END-";

}  // namespace

std::string GuestShell::InitScript(std::string_view setup) {
  return fmt::format(R"SH(#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
stty -echo 2>/dev/null
setup() {{
{setup}
}}
if out=$(setup 2>&1); then
  echo "{ready} OK"
else
  echo "$out" | sed 's/^/setup: /'
  echo "{ready} FAIL"
fi
# Each line in a shell of its own: a syntax error ends that line, not init.
while IFS= read -r line; do sh -c "$line"; done
poweroff -f
)SH",
                     fmt::arg("setup", setup), fmt::arg("ready", kReady));
}

Result<void> GuestShell::WaitReady(std::chrono::milliseconds timeout) {
  UMDEV_ASSIGN_OR_RETURN(const std::string line,
                         guest_.WaitForLineFrom(ready_from_, kReady, timeout));
  // The next boot's ready line comes after this one.
  ready_from_ = guest_.console().find(line, ready_from_) + line.size();
  if (!line.ends_with("OK")) return Fail(EIO, "the guest's setup failed:\n" + guest_.console());
  return {};
}

Result<int> GuestShell::Start(std::string_view command) {
  if (command.find('\n') != std::string_view::npos) {
    return Fail(EINVAL, "a guest command is one line");
  }
  const int id = next_id_++;
  UMDEV_TRY(guest_.Send(fmt::format("echo {begin}{id}; {{ {command} ; }} </dev/null 2>&1; "
                                    "echo \"{end}{id} $?\"\n",
                                    fmt::arg("begin", kBegin), fmt::arg("end", kEnd),
                                    fmt::arg("id", id), fmt::arg("command", command))));
  return id;
}

Result<GuestCommandResult> GuestShell::Wait(int id, std::chrono::milliseconds timeout) {
  const std::string end_marker = fmt::format("{}{} ", kEnd, id);
  UMDEV_ASSIGN_OR_RETURN(const std::string end_line, guest_.WaitForLine(end_marker, timeout));
  const std::string& console = guest_.console();
  const std::string begin_marker = fmt::format("{}{}\n", kBegin, id);
  const size_t begin = console.find(begin_marker);
  const size_t end = console.find(end_marker);
  GuestCommandResult result;
  if (begin != std::string::npos && end != std::string::npos && begin < end) {
    result.output = console.substr(begin + begin_marker.size(),
                                   end - begin - begin_marker.size());
  }
  result.status = std::atoi(end_line.c_str() + end_line.find(end_marker) + end_marker.size());
  return result;
}

Result<GuestCommandResult> GuestShell::Run(std::string_view command,
                                           std::chrono::milliseconds timeout) {
  UMDEV_ASSIGN_OR_RETURN(const int id, Start(command));
  return Wait(id, timeout);
}

}  // namespace umdev::test
