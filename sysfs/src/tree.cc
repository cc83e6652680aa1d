// Tree: path walking over the Layout, and the kernel's parsers for writes.
#include "umdev/sysfs/tree.h"

#include <fmt/format.h>

#include <cctype>
#include <deque>

#include "layout.h"

namespace umdev::sysfs {
namespace {

// Linux's MAXSYMLINKS: more links than this in one walk is ELOOP.
constexpr int kMaxSymlinks = 40;

std::deque<std::string> Split(std::string_view path) {
  std::deque<std::string> parts;
  while (!path.empty()) {
    const size_t slash = path.find('/');
    const std::string_view part = path.substr(0, slash);
    if (!part.empty()) parts.emplace_back(part);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

std::string Join(const std::vector<std::string>& parts) {
  std::string path;
  for (const std::string& part : parts) path += (path.empty() ? "" : "/") + part;
  return path;
}

struct Located {
  std::vector<std::string> path;  // Canonical.
  Entry entry;
};

// The VFS walk: every symlink but a final one (unless |follow_final|) is
// followed relative to the directory that holds it.
Result<Located> Walk(const Layout& layout, std::string_view path, bool follow_final) {
  std::deque<std::string> pending = Split(path);
  Located at{.path = {}, .entry = Entry{.kind = NodeKind::kDirectory, .mode = 0755}};
  int links = 0;
  while (!pending.empty()) {
    if (at.entry.kind != NodeKind::kDirectory) {
      return Fail(ENOTDIR, fmt::format("{}: not a directory", Join(at.path)));
    }
    const std::string name = std::move(pending.front());
    pending.pop_front();
    if (name == ".") continue;
    if (name == "..") {
      if (!at.path.empty()) at.path.pop_back();
      continue;
    }
    UMDEV_ASSIGN_OR_RETURN(const Children children, layout.ChildrenOf(at.path));
    auto it = children.find(name);
    if (it == children.end()) {
      return Fail(ENOENT, fmt::format("{}: no such file or directory", path));
    }
    if (it->second.kind == NodeKind::kSymlink && (!pending.empty() || follow_final)) {
      if (++links > kMaxSymlinks) return Fail(ELOOP, fmt::format("{}: too many links", path));
      const std::deque<std::string> target = Split(it->second.target);
      pending.insert(pending.begin(), target.begin(), target.end());
      continue;
    }
    at.path.push_back(name);
    at.entry = it->second;
  }
  return at;
}

NodeInfo InfoOf(const Entry& entry) {
  return NodeInfo{.kind = entry.kind, .mode = entry.mode, .target = entry.target};
}

// _parse_integer_fixup_radix() and _parse_integer() of lib/kstrtox.c.
Result<unsigned long> ParseUnsigned(std::string_view text) {
  unsigned base = 10;
  if (text.size() >= 3 && text[0] == '0' && std::tolower(static_cast<unsigned char>(text[1])) == 'x' &&
      std::isxdigit(static_cast<unsigned char>(text[2]))) {
    base = 16;
    text.remove_prefix(2);
  } else if (!text.empty() && text[0] == '0') {
    base = 8;
  }
  unsigned long value = 0;
  size_t used = 0;
  bool overflow = false;
  for (; used < text.size(); ++used) {
    const int c = std::tolower(static_cast<unsigned char>(text[used]));
    unsigned digit = 0;
    if (c >= '0' && c <= '9') {
      digit = static_cast<unsigned>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<unsigned>(c - 'a' + 10);
    } else {
      break;
    }
    if (digit >= base) break;
    if (value > (~0UL - digit) / base) overflow = true;
    value = value * base + digit;
  }
  text.remove_prefix(used);
  if (!text.empty() && text[0] == '\n') text.remove_prefix(1);
  if (used == 0 || !text.empty()) return Fail(EINVAL, "remove: not an integer");
  if (overflow) return Fail(EINVAL, "remove: integer out of range");
  return value;
}

}  // namespace

Result<Uuid> ParseCreateWrite(std::string_view data) {
  constexpr size_t kUuidLength = 36;
  if (data.size() != kUuidLength && data.size() != kUuidLength + 1) {
    return Fail(EINVAL, fmt::format("create: {} bytes is not a UUID", data.size()));
  }
  auto uuid = Uuid::Parse(data.substr(0, kUuidLength));
  if (!uuid.has_value()) return Fail(EINVAL, "create: not a UUID");
  return *uuid;
}

Result<unsigned long> ParseRemoveWrite(std::string_view data) {
  // kernfs hands the store a NUL-terminated copy; kstrtoul stops at the NUL.
  data = data.substr(0, data.find('\0'));
  if (!data.empty() && data[0] == '+') data.remove_prefix(1);
  return ParseUnsigned(data);
}

Tree::Tree(Registry& registry, TreeOptions options)
    : registry_(registry), options_(std::move(options)) {}

Result<NodeInfo> Tree::Stat(std::string_view path) const {
  const Layout layout(registry_, options_);
  UMDEV_ASSIGN_OR_RETURN(const Located at, Walk(layout, path, /*follow_final=*/false));
  return InfoOf(at.entry);
}

Result<std::vector<std::string>> Tree::List(std::string_view path) const {
  const Layout layout(registry_, options_);
  UMDEV_ASSIGN_OR_RETURN(const Located at, Walk(layout, path, /*follow_final=*/true));
  if (at.entry.kind != NodeKind::kDirectory) {
    return Fail(ENOTDIR, fmt::format("{}: not a directory", path));
  }
  UMDEV_ASSIGN_OR_RETURN(const Children children, layout.ChildrenOf(at.path));
  std::vector<std::string> names;
  for (const auto& [name, entry] : children) names.push_back(name);
  return names;
}

Result<std::string> Tree::ReadLink(std::string_view path) const {
  const Layout layout(registry_, options_);
  UMDEV_ASSIGN_OR_RETURN(const Located at, Walk(layout, path, /*follow_final=*/false));
  if (at.entry.kind != NodeKind::kSymlink) {
    return Fail(EINVAL, fmt::format("{}: not a symlink", path));
  }
  return at.entry.target;
}

Result<std::string> Tree::Resolve(std::string_view path) const {
  const Layout layout(registry_, options_);
  UMDEV_ASSIGN_OR_RETURN(const Located at, Walk(layout, path, /*follow_final=*/true));
  return Join(at.path);
}

Result<std::string> Tree::Read(std::string_view path) const {
  const Layout layout(registry_, options_);
  UMDEV_ASSIGN_OR_RETURN(const Located at, Walk(layout, path, /*follow_final=*/true));
  if (at.entry.kind == NodeKind::kDirectory) return Fail(EISDIR, fmt::format("{}: a directory", path));
  if (!at.entry.read) return Fail(EACCES, fmt::format("{}: not readable", path));
  return at.entry.read();
}

Result<void> Tree::Write(std::string_view path, std::string_view data) const {
  const Layout layout(registry_, options_);
  UMDEV_ASSIGN_OR_RETURN(const Located at, Walk(layout, path, /*follow_final=*/true));
  if (at.entry.kind == NodeKind::kDirectory) return Fail(EISDIR, fmt::format("{}: a directory", path));
  if (!at.entry.write) return Fail(EACCES, fmt::format("{}: not writable", path));
  return at.entry.write(data);
}

}  // namespace umdev::sysfs
