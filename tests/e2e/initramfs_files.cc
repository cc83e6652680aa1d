// What a guest's initramfs carries besides busybox: the project's programs
// with their shared libraries, and the root kernel's modules.
#include <fmt/format.h>

#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "e2e/qemu_guest.h"
#include "e2e/umdevd_process.h"

namespace umdev::test {
namespace {

namespace fs = std::filesystem;

// "vfio-pci" and "vfio_pci" are one module to modprobe.
std::string ModuleName(const std::string& path) {
  std::string name = fs::path(path).filename().string();
  name = name.substr(0, name.find(".ko"));
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

}  // namespace

Result<std::vector<InitramfsFile>> HostProgramFiles(const std::vector<fs::path>& programs) {
  std::vector<InitramfsFile> files;
  std::set<std::string> libraries;
  for (const fs::path& program : programs) {
    files.push_back({program, "/bin/" + program.filename().string()});
    const ShellOutput ldd = RunShell("ldd '" + program.string() + "' 2>&1");
    if (ldd.status != 0) {
      return Fail(EIO, fmt::format("ldd {}: {}", program.string(), ldd.out));
    }
    // "libx.so.1 => /lib/.../libx.so.1 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)".
    std::istringstream lines(ldd.out);
    for (std::string line; std::getline(lines, line);) {
      if (line.find("not found") != std::string::npos) {
        return Fail(EIO, fmt::format("ldd {}: {}", program.string(), line));
      }
      const size_t arrow = line.find("=> ");
      const size_t start = arrow != std::string::npos ? arrow + 3 : line.find_first_not_of(" \t");
      if (start == std::string::npos || line[start] != '/') continue;  // linux-vdso
      libraries.insert(line.substr(start, line.find(' ', start) - start));
    }
  }
  for (const std::string& library : libraries) files.push_back({library, library});
  return files;
}

Result<std::vector<InitramfsFile>> RootKernelModules(const fs::path& root, const fs::path& dir,
                                                     const std::vector<std::string>& names) {
  UMDEV_ASSIGN_OR_RETURN(const fs::path kernel, FindRootKernel(root));
  const std::string version = kernel.filename().string().substr(std::string("vmlinuz-").size());
  const fs::path modules = root / "lib/modules" / version;
  // modules.dep: "kernel/a.ko.xz: kernel/b.ko.xz kernel/c.ko.xz".
  const ShellOutput dep = RunShell("cat '" + (modules / "modules.dep").string() + "'");
  if (dep.status != 0) return Fail(ENOENT, "no modules.dep in " + modules.string());
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> by_name;
  std::istringstream lines(dep.out);
  for (std::string line; std::getline(lines, line);) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::istringstream deps(line.substr(colon + 1));
    std::vector<std::string> needs;
    for (std::string need; deps >> need;) needs.push_back(need);
    by_name[ModuleName(line.substr(0, colon))] = {line.substr(0, colon), std::move(needs)};
  }
  // Dependencies first, each module once.
  std::vector<std::string> order;
  std::set<std::string> seen;
  std::function<Result<void>(const std::string&)> visit =
      [&](const std::string& name) -> Result<void> {
    if (!seen.insert(name).second) return {};
    const auto found = by_name.find(name);
    if (found == by_name.end()) {
      return Fail(ENOENT, fmt::format("kernel {} has no module {}", version, name));
    }
    for (const std::string& need : found->second.second) UMDEV_TRY(visit(ModuleName(need)));
    order.push_back(found->second.first);
    return {};
  };
  for (const std::string& name : names) UMDEV_TRY(visit(ModuleName(name)));

  std::vector<InitramfsFile> files;
  std::error_code ec;
  fs::create_directories(dir / "modules", ec);
  for (size_t i = 0; i < order.size(); ++i) {
    const fs::path source = modules / order[i];
    const std::string base = fmt::format("{:02}-{}.ko", i, ModuleName(order[i]));
    const fs::path plain = dir / "modules" / base;
    // busybox insmod hands the file to init_module as it is: decompressed here.
    const std::string command =
        source.extension() == ".xz"
            ? fmt::format("xz -dc '{}' > '{}'", source.string(), plain.string())
            : fmt::format("cp '{}' '{}'", source.string(), plain.string());
    const ShellOutput out = RunShell(command + " 2>&1");
    if (out.status != 0) return Fail(EIO, fmt::format("{}: {}", command, out.out));
    files.push_back({plain, "/modules/" + base});
  }
  return files;
}

}  // namespace umdev::test
