// Usage errors as mdevctl's argument parser (clap 4) words them: the rules
// mdevctl leaves to clap (required arguments, conflicts) are checked here
// rather than by CLI11, so umdevctl prints clap's messages and usage lines
// and scripts that match mdevctl's stderr keep working. Pure functions.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace umdev::cli {

// clap's exit status for every usage error.
inline constexpr int kClapUsageStatus = 2;

// One argument as clap renders it: "--uuid <UUID>", "--auto". |long_name|
// has no dashes; value names are mdevctl's.
std::string RenderArgument(std::string_view long_name);

// The whole stderr text: "error: MESSAGE\n\n", "Usage: USAGE\n\n" when
// |usage| is not empty, then "For more information, try '--help'.\n".
std::string ClapErrorText(std::string_view message, std::string_view usage);

// "SUBCOMMAND [OPTIONS] <required>" as clap prints it under an unexpected
// argument; |subcommand| empty is the top level.
std::string BaseUsage(std::string_view subcommand);

// Checks |subcommand|'s conflicts, then its required arguments, over |used|
// (long names in command-line order, each once). Returns clap's error text
// with a usage line that starts "PROGRAM SUBCOMMAND", or nullopt when valid.
std::optional<std::string> CheckArguments(std::string_view program, std::string_view subcommand,
                                          std::span<const std::string> used);

}  // namespace umdev::cli
