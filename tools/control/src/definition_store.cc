// DefinitionStore: mdevctl.d on disk.
#include "umdev/control/definition_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "umdev/common/unique_fd.h"

namespace umdev::control {
namespace {

namespace fs = std::filesystem;

Result<void> WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string temp = path + ".tmp";
  {
    UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) return FailErrno("create " + temp);
    for (std::string_view rest = text; !rest.empty();) {
      const ssize_t n = ::write(fd.get(), rest.data(), rest.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int saved = errno;
        ::unlink(temp.c_str());
        return Fail(saved, "write " + temp);
      }
      rest.remove_prefix(static_cast<size_t>(n));
    }
    // A definition must survive a crash right after "define" returned.
    if (::fsync(fd.get()) != 0) {
      const int saved = errno;
      ::unlink(temp.c_str());
      return Fail(saved, "fsync " + temp);
    }
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(temp.c_str());
    return Fail(saved, "rename " + temp);
  }
  return {};
}

}  // namespace

size_t DefinitionStore::RemoveUnfinishedWrites() {
  MutexLock lock(mu_);
  size_t removed = 0;
  std::error_code error;
  for (const auto& parent : fs::directory_iterator(dir_, error)) {
    if (!parent.is_directory(error)) continue;
    for (const auto& entry : fs::directory_iterator(parent.path(), error)) {
      const std::string name = entry.path().filename().string();
      if (name.ends_with(".tmp") && Uuid::Parse(name.substr(0, name.size() - 4)).has_value() &&
          fs::remove(entry.path(), error)) {
        ++removed;
      }
    }
  }
  return removed;
}

bool IsPlainName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

std::string DefinitionStore::PathOf(const std::string& parent, const Uuid& uuid) const {
  return dir_ + "/" + parent + "/" + uuid.ToString();
}

std::vector<StoredDefinition> DefinitionStore::List(const std::optional<std::string>& parent) const {
  MutexLock lock(mu_);
  std::vector<StoredDefinition> found;
  std::error_code ec;
  std::vector<fs::path> parents;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (entry.is_directory(ec)) parents.push_back(entry.path());
  }
  std::sort(parents.begin(), parents.end());
  for (const fs::path& parent_dir : parents) {
    const std::string parent_name = parent_dir.filename().string();
    if (parent.has_value() && *parent != parent_name) continue;
    std::vector<StoredDefinition> children;
    for (const auto& entry : fs::directory_iterator(parent_dir, ec)) {
      if (!entry.is_regular_file(ec)) continue;
      const std::string name = entry.path().filename().string();
      auto uuid = Uuid::Parse(name);
      if (!uuid.has_value()) {
        spdlog::warn("mdevctl.d: can't determine uuid for file '{}'", name);
        continue;
      }
      std::ifstream in(entry.path());
      std::stringstream text;
      text << in.rdbuf();
      auto json = ParseJsonText(text.str());
      auto definition = json.has_value() ? ParseDefinition(*json) : std::unexpected(json.error());
      if (!definition.has_value()) {
        spdlog::warn("mdevctl.d: skipping {}: {}", entry.path().string(),
                     definition.error().context);
        continue;
      }
      children.push_back({parent_name, *uuid, std::move(*definition)});
    }
    std::sort(children.begin(), children.end(),
              [](const StoredDefinition& a, const StoredDefinition& b) { return a.uuid < b.uuid; });
    for (auto& child : children) found.push_back(std::move(child));
  }
  return found;
}

Result<void> DefinitionStore::Write(const std::string& parent, const Uuid& uuid,
                                    const Definition& definition, Mode mode) {
  if (!IsPlainName(parent)) return Fail(EINVAL, fmt::format("bad parent name '{}'", parent));
  MutexLock lock(mu_);
  const std::string path = PathOf(parent, uuid);
  std::error_code ec;
  const bool exists = fs::exists(path, ec);
  if (exists && mode == Mode::kCreate) {
    return Fail(EEXIST, fmt::format("{}/{} is already defined", parent, uuid.ToString()));
  }
  if (!exists && mode == Mode::kReplace) {
    return Fail(ENOENT, fmt::format("{}/{} is not defined", parent, uuid.ToString()));
  }
  fs::create_directories(dir_ + "/" + parent, ec);
  if (ec) return Fail(ec.value(), "create " + dir_ + "/" + parent);
  // mdevctl writes serde_json's pretty form with no trailing newline.
  return WriteFileAtomically(path, DefinitionToJson(definition).dump(2));
}

Result<void> DefinitionStore::Remove(const std::string& parent, const Uuid& uuid) {
  if (!IsPlainName(parent)) return Fail(EINVAL, fmt::format("bad parent name '{}'", parent));
  MutexLock lock(mu_);
  const std::string path = PathOf(parent, uuid);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) {
      return Fail(ENOENT, fmt::format("{}/{} is not defined", parent, uuid.ToString()));
    }
    return FailErrno("remove " + path);
  }
  // An empty parent directory goes too, as nothing else lives there.
  ::rmdir((dir_ + "/" + parent).c_str());
  return {};
}

}  // namespace umdev::control
