// umdevctl stats and top: snapshots of every instance's usage, and the
// refreshing table built from two of them.
#include "umdev/cli/top.h"

#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>

#include "command_support.h"

namespace umdev::cli {
namespace {

using Json = nlohmann::json;

std::string HumanBytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "K", "M", "G", "T"};
  size_t unit = 0;
  while (bytes >= 1024 && unit + 1 < std::size(kUnits)) {
    bytes /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f}{}", bytes, kUnits[unit])
                   : fmt::format("{:.1f}{}", bytes, kUnits[unit]);
}

uint64_t Counter(const Json& device, const char* name) {
  if (!device.contains("counters") || !device["counters"].contains(name)) return 0;
  const Json& value = device["counters"][name];
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  return value.is_number_integer() && value.get<int64_t>() > 0
             ? static_cast<uint64_t>(value.get<int64_t>())
             : 0;
}

bool HasCounter(const Json& device, const char* name) {
  return device.contains("counters") && device["counters"].contains(name);
}

// Lookups through find(): g++ 12 sees a null dereference in value().
bool Flag(const Json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_boolean() && it->get<bool>();
}

uint64_t Number(const Json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  return it->is_number_integer() && it->get<int64_t>() > 0 ? static_cast<uint64_t>(it->get<int64_t>())
                                                           : 0;
}

std::string Text(const Json& object, const char* key) {
  return object.contains(key) && object[key].is_string() ? object[key].get<std::string>() : "";
}

// The VM column: name, else pid; "-" while closed or for non-VM clients.
std::string VmColumn(const Json& device) {
  if (!device.contains("vm") || !device["vm"].is_object()) return "-";
  const Json& vm = device["vm"];
  if (Text(vm, "accel") == "none") return "-";
  const std::string name = Text(vm, "name");
  const int64_t pid = vm.contains("pid") && vm["pid"].is_number_integer() ? vm["pid"].get<int64_t>() : 0;
  return name.empty() ? fmt::format("pid {}", pid) : name;
}

}  // namespace

Outcome Stats(const Transport& call, bool json) {
  auto reply = detail::Ask(call, {{"cmd", "stats"}});
  if (!reply.has_value()) return detail::Report(reply.error());
  reply->erase("ok");
  if (json) return Outcome{0, reply->dump() + "\n", ""};
  std::string out;
  for (const Json& device : (*reply)["devices"]) {
    out += fmt::format("{} parent={} type={} open={} locked_bytes={}", Text(device, "uuid"),
                       Text(device, "parent"), Text(device, "type"),
                       Flag(device, "open") ? 1 : 0, Number(device, "locked_bytes"));
    if (device.contains("migration_state")) out += " migration=" + Text(device, "migration_state");
    if (VmColumn(device) != "-") out += " vm=" + VmColumn(device);
    for (const auto& [name, value] : device["counters"].items()) {
      out += fmt::format(" {}={}", name, value.dump());
    }
    out += "\n";
  }
  return Outcome{0, out, ""};
}

std::string FormatTop(const Json* previous, const Json& current, const std::string& clock,
                      size_t width) {
  std::map<std::string, const Json*> before;
  if (previous != nullptr) {
    for (const Json& device : (*previous)["devices"]) before[Text(device, "uuid")] = &device;
  }
  const double seconds =
      previous == nullptr
          ? 0.0
          : static_cast<double>(Number(current, "time_ns") - Number(*previous, "time_ns")) /
                1e9;
  std::vector<const Json*> devices;
  for (const Json& device : current["devices"]) devices.push_back(&device);
  std::sort(devices.begin(), devices.end(), [](const Json* a, const Json* b) {
    return std::make_pair(Text(*a, "parent"), Text(*a, "uuid")) <
           std::make_pair(Text(*b, "parent"), Text(*b, "uuid"));
  });
  uint64_t locked = 0;
  size_t open = 0;
  for (const Json* device : devices) {
    locked += Number(*device, "locked_bytes");
    open += Flag(*device, "open") ? 1 : 0;
  }
  std::vector<std::string> lines;
  lines.push_back(fmt::format("umdev top - {}  devices: {}  open: {}  pinned: {}", clock,
                              devices.size(), open, HumanBytes(static_cast<double>(locked))));
  lines.push_back("");
  lines.push_back(fmt::format("{:<12} {:<12} {:<8} {:<6} {:<16} {:>6} {:>8} {:>9} {:>7} {:>8} {}",
                              "PARENT", "TYPE", "UUID", "STATE", "VM", "BUSY%", "CMD/s",
                              "BYTES/s", "ERRORS", "PINNED", "MIGRATION"));
  std::string parent;
  for (const Json* device : devices) {
    const auto it = before.find(Text(*device, "uuid"));
    const Json* earlier = it == before.end() ? nullptr : it->second;
    // A rate needs the counter in both samples and time between them.
    const auto rate = [&](const char* name, auto format) -> std::string {
      if (!HasCounter(*device, name)) return "-";
      if (earlier == nullptr || seconds <= 0 || !HasCounter(*earlier, name)) return "-";
      const uint64_t now = Counter(*device, name);
      const uint64_t then = Counter(*earlier, name);
      return format(now >= then ? static_cast<double>(now - then) / seconds : 0.0);
    };
    const std::string busy = rate("busy_ns", [](double ns_per_s) {
      return fmt::format("{:.1f}", std::min(100.0, ns_per_s / 1e7));
    });
    const std::string commands =
        rate("commands", [](double per_s) { return fmt::format("{:.0f}", per_s); });
    const std::string bytes = rate("bytes", [](double per_s) { return HumanBytes(per_s); });
    const std::string errors =
        HasCounter(*device, "errors") ? std::to_string(Counter(*device, "errors")) : "-";
    const std::string migration =
        device->contains("migration_state") ? Text(*device, "migration_state") : "-";
    lines.push_back(fmt::format(
        "{:<12} {:<12} {:<8} {:<6} {:<16} {:>6} {:>8} {:>9} {:>7} {:>8} {}",
        Text(*device, "parent") == parent ? "" : Text(*device, "parent").substr(0, 12),
        Text(*device, "type").substr(0, 12), Text(*device, "uuid").substr(0, 8),
        Flag(*device, "open") ? "open" : "idle", VmColumn(*device).substr(0, 16), busy,
        commands, bytes, errors,
        HumanBytes(static_cast<double>(Number(*device, "locked_bytes"))), migration));
    parent = Text(*device, "parent");
  }
  std::string out;
  for (std::string& line : lines) {
    if (line.size() > width) line.resize(width);
    out += line + "\n";
  }
  return out;
}

namespace {

volatile sig_atomic_t g_stop = 0;
void OnStopSignal(int) { g_stop = 1; }

// Puts a terminal stdin in non-canonical, no-echo mode for single keys, and
// restores it on destruction. Main thread only.
class RawKeys {
 public:
  RawKeys() {
    if (::isatty(STDIN_FILENO) == 0 || ::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  ~RawKeys() {
    if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  RawKeys(const RawKeys&) = delete;
  RawKeys& operator=(const RawKeys&) = delete;
  bool active() const { return active_; }

 private:
  termios saved_{};
  bool active_ = false;
};

std::string ClockText() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  ::localtime_r(&now, &local);
  char text[16];
  std::strftime(text, sizeof(text), "%H:%M:%S", &local);
  return text;
}

size_t TerminalWidth() {
  winsize size{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 200;
}

}  // namespace

int Top(const Transport& call, const TopOptions& options) {
  const bool batch = options.batch || ::isatty(STDOUT_FILENO) == 0;
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  RawKeys keys;
  std::optional<Json> previous;
  for (unsigned shown = 0; g_stop == 0; ++shown) {
    auto reply = detail::Ask(call, {{"cmd", "stats"}});
    if (!reply.has_value()) {
      const Outcome failed = detail::Report(reply.error());
      std::fputs(failed.err.c_str(), stderr);
      return 1;
    }
    const std::string table = FormatTop(previous ? &*previous : nullptr, *reply, ClockText(),
                                        batch ? std::string::npos : TerminalWidth());
    // Redraw in place: home, the table, clear what is left of the screen.
    std::fputs(batch ? (shown > 0 ? "\n" : "") : "\033[H", stdout);
    std::fputs(table.c_str(), stdout);
    if (!batch) std::fputs("\033[J", stdout);
    std::fflush(stdout);
    previous = std::move(*reply);
    if (options.iterations != 0 && shown + 1 >= options.iterations) break;
    // Wait the interval, or less if 'q' is typed.
    pollfd input{STDIN_FILENO, POLLIN, 0};
    const int ready = ::poll(&input, keys.active() ? 1 : 0,
                             static_cast<int>(options.interval.count()));
    if (ready == 1) {
      char key = 0;
      if (::read(STDIN_FILENO, &key, 1) == 1 && (key == 'q' || key == 'Q')) break;
    }
  }
  if (!batch) std::fputs("\n", stdout);
  return 0;
}

}  // namespace umdev::cli
