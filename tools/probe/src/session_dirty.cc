// ProbeSession: dirty-log (DEVICE_FEATURE DMA_LOGGING_START / REPORT /
// STOP), as a migrating VMM asks which guest pages the device wrote.
#include <fmt/format.h>
#include <linux/vfio.h>

#include <bit>

#include "args.h"
#include "umdev/probe/session.h"
#include "umdev/vfio_user/protocol.h"

namespace umdev::probe {
namespace {

constexpr const char* kUsage =
    "dirty-log start IOVA SIZE [--page-size N] | dirty-log report IOVA SIZE [--page-size N] | "
    "dirty-log stop";

using vfio_user::DmaLoggingControl;
using vfio_user::DmaLoggingRange;
using vfio_user::DmaLoggingReport;

template <typename T>
void Append(std::vector<std::byte>& out, const T& value) {
  const auto bytes = std::as_bytes(std::span(&value, 1));
  out.insert(out.end(), bytes.begin(), bytes.end());
}

// "0-15 18 20-21": the dirty pages, by number from the report's start.
std::string PageRanges(const std::vector<uint64_t>& bitmap, uint64_t pages, uint64_t* count) {
  std::string text;
  *count = 0;
  for (uint64_t page = 0; page < pages;) {
    if ((bitmap[page / 64] >> (page % 64) & 1) == 0) {
      ++page;
      continue;
    }
    uint64_t end = page + 1;
    while (end < pages && (bitmap[end / 64] >> (end % 64) & 1) != 0) ++end;
    *count += end - page;
    text += end - page == 1 ? fmt::format(" {}", page) : fmt::format(" {}-{}", page, end - 1);
    page = end;
  }
  return text.empty() ? " none" : text;
}

}  // namespace

Result<Output> ProbeSession::DirtyLog(const std::vector<std::string>& words) {
  UMDEV_ASSIGN_OR_RETURN(Args args, ParseArgs(words, {"--page-size"}, {}, 1, 3, kUsage));
  const std::string& action = args.positional[0];
  uint64_t page_size = 4096;
  if (args.options.contains("--page-size")) {
    UMDEV_ASSIGN_OR_RETURN(page_size, ParseNumber(args.options["--page-size"], "N", true));
  }
  Output output;
  if (action == "stop") {
    if (args.positional.size() != 1) return Fail(kUsageError, kUsage);
    auto stopped = client_.DeviceFeature(
        VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, {});
    if (!stopped.has_value()) return FailAs(stopped.error(), "stop");
    output.json = {{"logging", false}};
    return output;
  }
  if ((action != "start" && action != "report") || args.positional.size() != 3) {
    return Fail(kUsageError, kUsage);
  }
  UMDEV_ASSIGN_OR_RETURN(const uint64_t iova, ParseNumber(args.positional[1], "IOVA"));
  UMDEV_ASSIGN_OR_RETURN(const uint64_t size, ParseNumber(args.positional[2], "SIZE", true));
  if (!std::has_single_bit(page_size) || size == 0) {
    return Fail(kUsageError, "dirty-log: SIZE must not be 0 and N must be a power of two");
  }
  std::vector<std::byte> data;
  if (action == "start") {
    Append(data, DmaLoggingControl{page_size, 1, 0});
    Append(data, DmaLoggingRange{iova, size});
    auto started = client_.DeviceFeature(
        VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START, data);
    if (!started.has_value()) {
      return FailAs(started.error(), fmt::format("start at {:#x} size {:#x}", iova, size));
    }
    output.json = {{"logging", true}, {"iova", iova}, {"size", size}, {"page_size", page_size}};
    return output;
  }
  const uint64_t pages = (size + page_size - 1) / page_size;
  const uint64_t bitmap_bytes = (pages + 63) / 64 * 8;
  Append(data, DmaLoggingReport{iova, size, page_size});
  const uint64_t argsz = sizeof(vfio_user::DeviceFeaturePayload) + data.size() + bitmap_bytes;
  if (argsz > UINT32_MAX) return Fail(kUsageError, "dirty-log: the bitmap would be too large");
  auto reported =
      client_.DeviceFeature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
                            data, static_cast<uint32_t>(argsz));
  const std::string where = fmt::format("report at {:#x} size {:#x}", iova, size);
  if (!reported.has_value()) return FailAs(reported.error(), where);
  if (reported->size() != sizeof(DmaLoggingReport) + bitmap_bytes) {
    return Fail(EPROTO, fmt::format("{}: a reply of {} bytes", where, reported->size()));
  }
  std::vector<uint64_t> bitmap(bitmap_bytes / 8);
  std::memcpy(bitmap.data(), reported->data() + sizeof(DmaLoggingReport), bitmap_bytes);
  uint64_t dirty = 0;
  const std::string ranges = PageRanges(bitmap, pages, &dirty);
  output.text = fmt::format("dirty: {} of {} pages of {:#x} at {:#x}:{}\n", dirty, pages,
                            page_size, iova, ranges);
  output.json = {{"iova", iova},   {"size", size},          {"page_size", page_size},
                 {"pages", pages}, {"dirty_pages", dirty}, {"bitmap", bitmap}};
  return output;
}

}  // namespace umdev::probe
