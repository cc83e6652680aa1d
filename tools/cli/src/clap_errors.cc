// clap's usage errors for mdevctl's subcommands; see clap_errors.h.
#include "umdev/cli/clap_errors.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

namespace umdev::cli {
namespace {

// modify needs one of these; clap prints the group last, as one token.
constexpr std::string_view kModifyGroup =
    "<--auto|--manual|--addattr <attr_name>|--delattr|--jsonfile <JSONFILE>>";
constexpr std::array<std::string_view, 5> kModifyGroupMembers = {"auto", "manual", "addattr",
                                                                 "delattr", "jsonfile"};

using Pair = std::pair<std::string_view, std::string_view>;
constexpr std::array<Pair, 12> kModifyConflicts = {{{"value", "delattr"},
                                                    {"auto", "index"},
                                                    {"auto", "value"},
                                                    {"auto", "manual"},
                                                    {"manual", "index"},
                                                    {"manual", "value"},
                                                    {"live", "type"},
                                                    {"live", "index"},
                                                    {"live", "value"},
                                                    {"jsonfile", "type"},
                                                    {"jsonfile", "index"},
                                                    {"jsonfile", "value"}}};
constexpr std::array<Pair, 2> kDefineConflicts = {{{"jsonfile", "type"}, {"jsonfile", "auto"}}};
constexpr std::array<Pair, 1> kStartConflicts = {{{"jsonfile", "type"}}};

bool Contains(std::span<const std::string> used, std::string_view name) {
  return std::find(used.begin(), used.end(), name) != used.end();
}

bool InModifyGroup(std::string_view name) {
  return std::find(kModifyGroupMembers.begin(), kModifyGroupMembers.end(), name) !=
         kModifyGroupMembers.end();
}

std::span<const Pair> ConflictsOf(std::string_view subcommand) {
  if (subcommand == "modify") return kModifyConflicts;
  if (subcommand == "define") return kDefineConflicts;
  if (subcommand == "start") return kStartConflicts;
  return {};
}

bool Conflicts(std::string_view subcommand, std::string_view x, std::string_view y) {
  // modify's group allows one member only.
  if (subcommand == "modify" && x != y && InModifyGroup(x) && InModifyGroup(y)) return true;
  for (const auto& [a, b] : ConflictsOf(subcommand)) {
    if ((x == a && y == b) || (x == b && y == a)) return true;
  }
  return false;
}

// The first used argument (in command-line order) with conflicts, and every
// used argument it conflicts with, in command-line order.
std::optional<std::pair<std::string, std::vector<std::string>>> FirstConflict(
    std::string_view subcommand, std::span<const std::string> used) {
  for (const std::string& arg : used) {
    std::vector<std::string> others;
    for (const std::string& other : used) {
      if (Conflicts(subcommand, arg, other)) others.push_back(other);
    }
    if (!others.empty()) return std::make_pair(arg, std::move(others));
  }
  return std::nullopt;
}

// clap's usage under an error: the subcommand's required arguments first
// (modify treats a given --value as one, since --addattr requires it), the
// other given arguments in command-line order, then what is still missing
// (define, start) or modify's group.
std::string ErrorUsage(std::string_view program, std::string_view subcommand,
                       std::span<const std::string> used, std::span<const std::string> missing) {
  std::vector<std::string> items;
  std::vector<std::string_view> skip;
  const bool uuid_required = subcommand == "modify" || subcommand == "stop" || subcommand == "undefine";
  if (uuid_required) {
    items.push_back(RenderArgument("uuid"));
    skip.push_back("uuid");
  }
  if (subcommand == "modify" && (Contains(used, "value") || Contains(missing, "value"))) {
    items.push_back(RenderArgument("value"));
    skip.push_back("value");
  }
  for (const std::string& arg : used) {
    if (std::find(skip.begin(), skip.end(), arg) != skip.end()) continue;
    if (subcommand == "modify" && InModifyGroup(arg)) continue;
    items.push_back(RenderArgument(arg));
  }
  if (!uuid_required) {
    for (const std::string& arg : missing) items.push_back(RenderArgument(arg));
  }
  if (subcommand == "modify") items.emplace_back(kModifyGroup);
  return fmt::format("{} {} {}", program, subcommand, fmt::join(items, " "));
}

std::string MissingText(std::span<const std::string> missing) {
  std::string text = "the following required arguments were not provided:";
  for (const std::string& arg : missing) {
    text += "\n  " + (arg == "group" ? std::string(kModifyGroup) : RenderArgument(arg));
  }
  return text;
}

}  // namespace

std::string RenderArgument(std::string_view long_name) {
  static constexpr std::array<Pair, 7> kValueNames = {{{"uuid", "<UUID>"},
                                                       {"parent", "<PARENT>"},
                                                       {"type", "<type>"},
                                                       {"jsonfile", "<JSONFILE>"},
                                                       {"addattr", "<attr_name>"},
                                                       {"value", "<attr_value>"},
                                                       {"index", "<INDEX>"}}};
  for (const auto& [name, value] : kValueNames) {
    if (name == long_name) return fmt::format("--{} {}", name, value);
  }
  return fmt::format("--{}", long_name);
}

std::string ClapErrorText(std::string_view message, std::string_view usage) {
  std::string text = fmt::format("error: {}\n\n", message);
  if (!usage.empty()) text += fmt::format("Usage: {}\n\n", usage);
  return text + "For more information, try '--help'.\n";
}

std::string BaseUsage(std::string_view subcommand) {
  if (subcommand.empty()) return "[OPTIONS] <COMMAND>";
  if (subcommand == "stop" || subcommand == "undefine") {
    return fmt::format("{} [OPTIONS] --uuid <UUID>", subcommand);
  }
  if (subcommand == "modify") return fmt::format("modify [OPTIONS] --uuid <UUID> {}", kModifyGroup);
  return fmt::format("{} [OPTIONS]", subcommand);
}

std::optional<std::string> CheckArguments(std::string_view program, std::string_view subcommand,
                                          std::span<const std::string> used) {
  if (const auto conflict = FirstConflict(subcommand, used)) {
    const auto& [arg, others] = *conflict;
    std::string message = fmt::format("the argument '{}' cannot be used with", RenderArgument(arg));
    if (others.size() == 1) {
      message += fmt::format(" '{}'", RenderArgument(others.front()));
    } else {
      message += ":";
      for (const std::string& other : others) message += "\n  " + RenderArgument(other);
    }
    // The usage line leaves out the arguments that conflict.
    std::vector<std::string> kept;
    for (const std::string& a : used) {
      if (std::find(others.begin(), others.end(), a) == others.end()) kept.push_back(a);
    }
    return ClapErrorText(message, ErrorUsage(program, subcommand, kept, {}));
  }
  std::vector<std::string> missing;
  if (subcommand == "stop" || subcommand == "undefine" || subcommand == "modify") {
    if (!Contains(used, "uuid")) missing.emplace_back("uuid");
  }
  if (subcommand == "modify" && missing.empty()) {
    if (Contains(used, "addattr") && !Contains(used, "value")) {
      missing.emplace_back("value");
    } else if (std::none_of(kModifyGroupMembers.begin(), kModifyGroupMembers.end(),
                            [&](std::string_view m) { return Contains(used, m); })) {
      missing.emplace_back("group");
    }
  }
  // define and start identify a device by UUID or create one on a parent.
  if ((subcommand == "define" || subcommand == "start") && !Contains(used, "uuid") &&
      !Contains(used, "parent")) {
    missing = {"uuid", "parent"};
  }
  if (missing.empty()) return std::nullopt;
  return ClapErrorText(MissingText(missing), ErrorUsage(program, subcommand, used, missing));
}

}  // namespace umdev::cli
