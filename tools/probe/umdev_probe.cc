// umdev-probe: a vfio-user client for testing devices without a VM.
//   umdev-probe --socket PATH [--json] [--timeout MS] COMMAND [ARGS...]
//   umdev-probe --socket PATH [--json] [--keep-going] -    (commands on stdin)
// CLI11 2.1's string splitting trips g++ 12's -Wnull-dereference when inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "umdev/probe/session.h"
#include "umdev/vfio_user/client.h"

int main(int argc, char** argv) {
  CLI::App app{"Drive a vfio-user device over its socket, without a VM"};
  std::string socket;
  bool json = false;
  bool keep_going = false;
  unsigned timeout_ms = 5000;
  app.add_option("--socket", socket, "the device's vfio-user socket")->required();
  app.add_flag("--json", json, "print one JSON object per command");
  app.add_flag("--keep-going", keep_going, "in a script, go on after a failed command");
  app.add_option("--timeout", timeout_ms, "per-message timeout in ms (QEMU's x-msg-timeout)");
  app.prefix_command();
  app.footer(
      "Commands: info | regions | irqs | read REGION OFFSET [WIDTH|--count N] |\n"
      "  write REGION OFFSET VALUE [WIDTH] [--posted] | map-memory SIZE [--iova A] [--no-fd] |\n"
      "  mem-read IOVA LEN | mem-write IOVA HEXBYTES | arm-irq INDEX [VECTOR] |\n"
      "  wait-irq INDEX [VECTOR] [--timeout MS] | unmask-irq INDEX [VECTOR] | reset |\n"
      "  save FILE | resume FILE |\n"
      "  - or script: one command a line from stdin on one connection ('#' comments)");
  CLI11_PARSE(app, argc, argv);
  std::vector<std::string> words = app.remaining();
  if (words.empty()) {
    std::fprintf(stderr, "umdev-probe: no command (see --help)\n");
    return 2;
  }

  umdev::vfio_user::ClientOptions options;
  options.timeout = std::chrono::milliseconds(timeout_ms);
  auto client = umdev::vfio_user::Client::Connect(socket, options);
  if (!client.has_value()) {
    std::fprintf(stderr, "%s\n",
                 umdev::probe::ProbeSession::FormatError("connect", client.error()).c_str());
    return 1;
  }
  umdev::probe::ProbeSession session(**client, json, stdout, stderr);
  if (words.size() == 1 && (words[0] == "-" || words[0] == "script")) {
    return session.RunScript(std::cin, keep_going);
  }
  return session.Run(words);
}
