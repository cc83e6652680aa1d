// ProbeSession: guest memory, interrupts and migration.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <array>
#include <fstream>
#include <iterator>

#include "args.h"
#include "umdev/probe/pci_format.h"
#include "umdev/probe/session.h"

namespace umdev::probe {
namespace {

// Not in older kernel headers (added with PRE_COPY support in Linux 6.2).
constexpr uint32_t kStatePreCopy = 6;

std::string StateName(uint32_t state) {
  static constexpr std::array<const char*, 8> kNames = {
      "ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P", "PRE_COPY",
      "PRE_COPY_P2P"};
  return state < kNames.size() ? kNames[state] : fmt::format("{}", state);
}

Result<void> SetState(vfio_user::Client& client, uint32_t state) {
  auto set = client.SetMigrationState(state);
  if (!set.has_value()) return FailAs(set.error(), "migration state " + StateName(state));
  return {};
}

Result<std::pair<uint32_t, uint32_t>> IrqWords(const Args& args) {
  UMDEV_ASSIGN_OR_RETURN(uint64_t index, ParseNumber(args.positional[0], "INDEX"));
  uint64_t vector = 0;
  if (args.positional.size() > 1) {
    UMDEV_ASSIGN_OR_RETURN(vector, ParseNumber(args.positional[1], "VECTOR"));
  }
  if (index > 0xffffffffu || vector > 0xffffffffu) return Fail(EINVAL, "INDEX or VECTOR too large");
  return std::pair(static_cast<uint32_t>(index), static_cast<uint32_t>(vector));
}

}  // namespace

Result<Output> ProbeSession::MapMemory(const std::vector<std::string>& words) {
  UMDEV_ASSIGN_OR_RETURN(Args args, ParseArgs(words, {"--iova"}, {"--no-fd"}, 1, 1,
                                              "map-memory SIZE [--iova A] [--no-fd]"));
  UMDEV_ASSIGN_OR_RETURN(uint64_t size, ParseNumber(args.positional[0], "SIZE", true));
  if (size == 0 || size % 4096 != 0) {
    return Fail(EINVAL, fmt::format("SIZE {:#x} is not a positive multiple of 4 KiB", size));
  }
  uint64_t iova = next_iova_;
  if (args.options.contains("--iova")) {
    UMDEV_ASSIGN_OR_RETURN(iova, ParseNumber(args.options["--iova"], "IOVA"));
  }
  const bool share_fd = !args.Has("--no-fd");
  auto added = client_.AddGuestMemory(iova, size, share_fd);
  if (!added.has_value()) return FailAs(added.error(), fmt::format("iova {:#x}", iova));
  next_iova_ = std::max(next_iova_, iova + size);
  Output output;
  output.text = fmt::format("guest memory {:#x}-{:#x} ({}), {}\n", iova, iova + size - 1,
                            FormatSize(size), share_fd ? "fd shared" : "no fd (message DMA)");
  output.json = {{"iova", iova}, {"size", size}, {"fd", share_fd}};
  return output;
}

Result<Output> ProbeSession::MemRead(const std::vector<std::string>& words) {
  UMDEV_ASSIGN_OR_RETURN(Args args, ParseArgs(words, {}, {}, 2, 2, "mem-read IOVA LEN"));
  UMDEV_ASSIGN_OR_RETURN(uint64_t iova, ParseNumber(args.positional[0], "IOVA"));
  UMDEV_ASSIGN_OR_RETURN(uint64_t length, ParseNumber(args.positional[1], "LEN", true));
  if (length == 0 || length > (64u << 20)) return Fail(EINVAL, fmt::format("bad LEN {}", length));
  std::vector<std::byte> data(length);
  auto read = client_.ReadGuestMemory(iova, data);
  if (!read.has_value()) return FailAs(read.error(), fmt::format("iova {:#x}", iova));
  Output output;
  output.text = HexDump(iova, data);
  output.json = {{"iova", iova}, {"data", HexString(data)}};
  return output;
}

Result<Output> ProbeSession::MemWrite(const std::vector<std::string>& words) {
  UMDEV_ASSIGN_OR_RETURN(Args args, ParseArgs(words, {}, {}, 2, 2, "mem-write IOVA HEXBYTES"));
  UMDEV_ASSIGN_OR_RETURN(uint64_t iova, ParseNumber(args.positional[0], "IOVA"));
  UMDEV_ASSIGN_OR_RETURN(std::vector<std::byte> data, ParseHex(args.positional[1]));
  auto written = client_.WriteGuestMemory(iova, data);
  if (!written.has_value()) return FailAs(written.error(), fmt::format("iova {:#x}", iova));
  Output output;
  output.json = {{"iova", iova}, {"count", data.size()}};
  return output;
}

Result<int> ProbeSession::IrqEventfd(std::pair<uint32_t, uint32_t> irq) {
  auto found = irq_fds_.find(irq);
  if (found != irq_fds_.end()) return found->second.get();
  UniqueFd created(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!created) return FailErrno("eventfd");
  const int raw = created.get();
  UMDEV_TRY(client_.SetIrqEventfds(irq.first, irq.second, VFIO_IRQ_SET_ACTION_TRIGGER,
                                   std::span(&raw, 1)));
  irq_fds_.emplace(irq, std::move(created));
  return raw;
}

// Registers the trigger eventfd now, so that an interrupt the next commands
// cause is counted by a later wait-irq (a device does not replay an
// interrupt raised before its trigger existed, as on a kernel device).
Result<Output> ProbeSession::ArmIrq(const std::vector<std::string>& words) {
  UMDEV_ASSIGN_OR_RETURN(Args args, ParseArgs(words, {}, {}, 1, 2, "arm-irq INDEX [VECTOR]"));
  UMDEV_ASSIGN_OR_RETURN(auto irq, IrqWords(args));
  auto fd = IrqEventfd(irq);
  if (!fd.has_value()) {
    return FailAs(fd.error(), fmt::format("irq {} vector {}", irq.first, irq.second));
  }
  Output output;
  output.json = {{"index", irq.first}, {"vector", irq.second}};
  return output;
}

Result<Output> ProbeSession::WaitIrq(const std::vector<std::string>& words) {
  UMDEV_ASSIGN_OR_RETURN(Args args, ParseArgs(words, {"--timeout"}, {}, 1, 2,
                                              "wait-irq INDEX [VECTOR] [--timeout MS]"));
  UMDEV_ASSIGN_OR_RETURN(auto irq, IrqWords(args));
  uint64_t timeout_ms = 5000;
  if (args.options.contains("--timeout")) {
    UMDEV_ASSIGN_OR_RETURN(timeout_ms, ParseNumber(args.options["--timeout"], "MS"));
    timeout_ms = std::min<uint64_t>(timeout_ms, 24 * 3600 * 1000);
  }
  const std::string where = fmt::format("irq {} vector {}", irq.first, irq.second);
  auto fd = IrqEventfd(irq);
  if (!fd.has_value()) return FailAs(fd.error(), where);
  pollfd p{*fd, POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&p, 1, static_cast<int>(timeout_ms));
  } while (ready < 0 && errno == EINTR);
  if (ready < 0) return FailErrno("poll");
  if (ready == 0) {
    return Fail(ETIMEDOUT, fmt::format("{}: no interrupt within {} ms", where, timeout_ms));
  }
  uint64_t count = 0;
  if (::read(*fd, &count, sizeof(count)) != sizeof(count)) return FailErrno("eventfd read");
  Output output;
  output.text = fmt::format("{}: {} interrupt(s)\n", where, count);
  output.json = {{"index", irq.first}, {"vector", irq.second}, {"count", count}};
  return output;
}

// By message (SET_IRQS DATA_NONE), or with --eventfd by signalling an
// unmask eventfd registered on first use (ACTION_UNMASK | DATA_EVENTFD),
// the way QEMU hands KVM's resamplefd over: no message per interrupt.
Result<Output> ProbeSession::UnmaskIrq(const std::vector<std::string>& words) {
  UMDEV_ASSIGN_OR_RETURN(Args args, ParseArgs(words, {}, {"--eventfd"}, 1, 2,
                                              "unmask-irq INDEX [VECTOR] [--eventfd]"));
  UMDEV_ASSIGN_OR_RETURN(auto irq, IrqWords(args));
  const std::string where = fmt::format("irq {} vector {}", irq.first, irq.second);
  Output output;
  output.json = {{"index", irq.first}, {"vector", irq.second}, {"eventfd", args.Has("--eventfd")}};
  if (!args.Has("--eventfd")) {
    auto unmasked = client_.SetIrqsNone(irq.first, irq.second, 1, VFIO_IRQ_SET_ACTION_UNMASK);
    if (!unmasked.has_value()) return FailAs(unmasked.error(), where);
    return output;
  }
  auto found = unmask_fds_.find(irq);
  if (found == unmask_fds_.end()) {
    UniqueFd created(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!created) return FailErrno("eventfd");
    const int raw = created.get();
    auto registered = client_.SetIrqEventfds(irq.first, irq.second, VFIO_IRQ_SET_ACTION_UNMASK,
                                             std::span(&raw, 1));
    if (!registered.has_value()) return FailAs(registered.error(), where);
    found = unmask_fds_.emplace(irq, std::move(created)).first;
  }
  const uint64_t one = 1;
  if (::write(found->second.get(), &one, sizeof(one)) != sizeof(one)) {
    return FailErrno("eventfd write");
  }
  return output;
}

// The kernel's arcs: RUNNING -> STOP -> STOP_COPY, read until a short read,
// STOP_COPY -> STOP, and back to RUNNING if the device was running.
Result<Output> ProbeSession::Save(const std::vector<std::string>& words) {
  UMDEV_ASSIGN_OR_RETURN(Args args, ParseArgs(words, {}, {}, 1, 1, "save FILE"));
  auto state = client_.GetMigrationState();
  if (!state.has_value()) return FailAs(state.error(), "migration state");
  const uint32_t original = *state;
  if (original == VFIO_DEVICE_STATE_RUNNING) UMDEV_TRY(SetState(client_, VFIO_DEVICE_STATE_STOP));
  if (original == VFIO_DEVICE_STATE_RUNNING || original == VFIO_DEVICE_STATE_STOP ||
      original == kStatePreCopy) {
    UMDEV_TRY(SetState(client_, VFIO_DEVICE_STATE_STOP_COPY));
  } else if (original != VFIO_DEVICE_STATE_STOP_COPY) {
    return Fail(EINVAL, "device is in migration state " + StateName(original));
  }
  const auto chunk = static_cast<uint32_t>(
      std::min<uint64_t>(client_.server_caps().max_data_xfer_size, 1u << 20));
  std::vector<std::byte> stream;
  for (;;) {
    auto data = client_.MigDataRead(chunk);
    if (!data.has_value()) return FailAs(data.error(), "migration data");
    stream.insert(stream.end(), data->begin(), data->end());
    if (data->size() < chunk) break;
  }
  UMDEV_TRY(SetState(client_, VFIO_DEVICE_STATE_STOP));
  if (original == VFIO_DEVICE_STATE_RUNNING || original == kStatePreCopy) {
    UMDEV_TRY(SetState(client_, VFIO_DEVICE_STATE_RUNNING));
  }
  const std::string& path = args.positional[0];
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(reinterpret_cast<const char*>(stream.data()), static_cast<std::streamsize>(stream.size()));
  file.close();
  if (!file) return Fail(EIO, "cannot write " + path);
  Output output;
  output.text = fmt::format("saved {} bytes to {}\n", stream.size(), path);
  output.json = {{"file", path}, {"bytes", stream.size()}};
  return output;
}

// RUNNING -> STOP -> RESUMING, the stream, RESUMING -> STOP -> RUNNING.
Result<Output> ProbeSession::Resume(const std::vector<std::string>& words) {
  UMDEV_ASSIGN_OR_RETURN(Args args, ParseArgs(words, {}, {}, 1, 1, "resume FILE"));
  const std::string& path = args.positional[0];
  std::ifstream file(path, std::ios::binary);
  if (!file) return Fail(ENOENT, "cannot read " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  auto state = client_.GetMigrationState();
  if (!state.has_value()) return FailAs(state.error(), "migration state");
  if (*state == VFIO_DEVICE_STATE_RUNNING) {
    UMDEV_TRY(SetState(client_, VFIO_DEVICE_STATE_STOP));
  } else if (*state != VFIO_DEVICE_STATE_STOP) {
    return Fail(EINVAL, "device is in migration state " + StateName(*state));
  }
  UMDEV_TRY(SetState(client_, VFIO_DEVICE_STATE_RESUMING));
  auto written = client_.MigDataWrite(std::as_bytes(std::span(bytes)));
  if (!written.has_value()) return FailAs(written.error(), "migration data");
  UMDEV_TRY(SetState(client_, VFIO_DEVICE_STATE_STOP));
  UMDEV_TRY(SetState(client_, VFIO_DEVICE_STATE_RUNNING));
  Output output;
  output.text = fmt::format("resumed {} bytes from {}\n", bytes.size(), path);
  output.json = {{"file", path}, {"bytes", bytes.size()}};
  return output;
}

}  // namespace umdev::probe
