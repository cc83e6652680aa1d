// umdevctl's live views (umdev's own, not mdevctl's): `stats` prints one
// snapshot for scripts, `top` refreshes a table every interval, as top(1)
// and nvidia-smi vgpu do.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "umdev/cli/commands.h"

namespace umdev::cli {

struct TopOptions {
  std::chrono::milliseconds interval{1000};
  // Refreshes before exiting; 0: until 'q' or a signal.
  unsigned iterations = 0;
  // Batch mode: append each table to stdout instead of redrawing the screen
  // (what a script or a log wants; also when stdout is not a terminal).
  bool batch = false;
};

// One control "stats" reply: --json prints it (without "ok") as one line,
// else one line per device with its fields. Errors: the daemon's.
Outcome Stats(const Transport& call, bool json);

// Renders the table for two consecutive "stats" replies (|previous| null
// for the first: rates then read "-"). Pure; |width| cuts lines.
std::string FormatTop(const nlohmann::json* previous, const nlohmann::json& current,
                      const std::string& clock, size_t width);

// Runs the view until its iterations are done, 'q' is typed or SIGINT/SIGTERM
// arrives; restores the terminal. Returns the exit status (1 when the daemon
// cannot be reached).
int Top(const Transport& call, const TopOptions& options);

}  // namespace umdev::cli
