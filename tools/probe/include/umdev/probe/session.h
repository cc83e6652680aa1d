// ProbeSession: umdev-probe's commands, run one after another on one
// vfio-user connection (so guest memory mapped by one command serves the
// device DMA seen by the next).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdio>
#include <istream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "umdev/common/error.h"
#include "umdev/common/mapping.h"
#include "umdev/common/unique_fd.h"
#include "umdev/vfio_user/client.h"

namespace umdev::probe {

// A command's output: the text lines and the JSON object printed with --json.
struct Output {
  std::string text;
  nlohmann::json json = nlohmann::json::object();
};

// Error::code 0 marks a usage error (bad words, not a device failure).
inline constexpr int kUsageError = 0;

// One thread at a time.
class ProbeSession {
 public:
  ProbeSession(vfio_user::Client& client, bool json, std::FILE* out, std::FILE* err)
      : client_(client), json_(json), out_(out), err_(err) {}

  // Runs one command (words[0] is its name) and prints its output or its
  // error ("read: region 9: Invalid argument (EINVAL)"). Returns the exit
  // status: 0, 1 the command failed, 2 a usage error.
  int Run(const std::vector<std::string>& words);
  // One command a line, '#' starts a comment; stops at the first failure
  // unless |keep_going|. Returns the first non-zero status, else 0.
  int RunScript(std::istream& in, bool keep_going);

  // Splits a script line into words, dropping a '#' comment.
  static std::vector<std::string> SplitLine(const std::string& line);
  // "read: region 9: Invalid argument (EINVAL)".
  static std::string FormatError(const std::string& command, const Error& error);

 private:
  Result<Output> Dispatch(const std::vector<std::string>& words);
  Result<Output> Info();
  Result<Output> Regions();
  Result<Output> Irqs();
  Result<Output> Read(const std::vector<std::string>& words);
  Result<Output> Write(const std::vector<std::string>& words);
  Result<Output> MapMemory(const std::vector<std::string>& words);
  Result<Output> MemRead(const std::vector<std::string>& words);
  Result<Output> MemWrite(const std::vector<std::string>& words);
  Result<Output> ArmIrq(const std::vector<std::string>& words);
  Result<Output> WaitIrq(const std::vector<std::string>& words);
  Result<Output> UnmaskIrq(const std::vector<std::string>& words);
  Result<Output> DirtyLog(const std::vector<std::string>& words);
  Result<Output> Reset();
  Result<Output> Save(const std::vector<std::string>& words);
  Result<Output> Resume(const std::vector<std::string>& words);

  vfio_user::Client& client_;
  const bool json_;
  std::FILE* out_;
  std::FILE* err_;
  uint64_t next_iova_ = 0;
  // Trigger eventfds wait-irq registered, by (index, vector); kept so that
  // interrupts between two waits are not lost.
  std::map<std::pair<uint32_t, uint32_t>, UniqueFd> irq_fds_;
  // Unmask eventfds (ACTION_UNMASK, KVM's resamplefd) unmask-irq --eventfd
  // registered, by (index, vector).
  std::map<std::pair<uint32_t, uint32_t>, UniqueFd> unmask_fds_;
  // The trigger eventfd of |irq|, registered with the device on first use.
  Result<int> IrqEventfd(std::pair<uint32_t, uint32_t> irq);
  // Where |width| bytes at |offset| of |region| are in this process, through
  // the region's fd mapped as a client maps a BAR (read/write --mmap).
  // Errors: EINVAL the region cannot be mapped there (no MMAP flag, no fd,
  // no sparse area holding the range); mmap's.
  Result<volatile std::byte*> Mapped(uint32_t region, uint64_t offset, uint64_t width);
  struct RegionMap {
    Mapping mapping;
    uint64_t start = 0;  // The mapped area's offset in the region.
  };
  std::map<uint32_t, RegionMap> region_maps_;
};

}  // namespace umdev::probe
