// umdevctl libvirt-xml: what a libvirt domain needs to attach running devices.
//
// libvirt has no element for a vfio-user device, so the device goes on QEMU's
// command line through the qemu namespace (<qemu:commandline>), and guest RAM
// must be a shared memfd so that QEMU can pass it with each DMA_MAP.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <limits>

#include "command_support.h"
#include "umdev/cli/commands.h"

namespace umdev::cli {

using namespace detail;

namespace {

constexpr std::string_view kQemuNamespace = "http://libvirt.org/schemas/domain/qemu/1.0";

// Text safe inside a single- or double-quoted XML attribute or element.
std::string XmlEscape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&apos;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// The fragments every domain needs, each line indented by |indent|.
std::string Fragments(const std::vector<Attachment>& attachments, std::string_view indent) {
  std::string out;
  out += fmt::format("{0}<memoryBacking>\n{0}  <source type='memfd'/>\n"
                     "{0}  <access mode='shared'/>\n{0}</memoryBacking>\n",
                     indent);
  out += fmt::format("{}<qemu:commandline>\n", indent);
  for (const Attachment& a : attachments) {
    out += fmt::format("{0}  <qemu:arg value='-device'/>\n{0}  <qemu:arg value='{1}'/>\n", indent,
                       XmlEscape(a.DeviceJson(true)));
  }
  out += fmt::format("{}</qemu:commandline>\n", indent);
  return out;
}

// The one VM UUID every bound device agrees on, "" when none is bound.
Try<std::string> BoundUuid(const std::vector<Attachment>& attachments) {
  std::string bound;
  for (const Attachment& a : attachments) {
    if (a.bound_vm_uuid.empty()) continue;
    if (!bound.empty() && bound != a.bound_vm_uuid) {
      return std::unexpected(Failure{
          fmt::format("Mediated device {} is bound to VM {}, another device to VM {}: no one domain "
                      "can open both",
                      a.uuid, a.bound_vm_uuid, bound),
          ""});
    }
    bound = a.bound_vm_uuid;
  }
  return bound;
}

}  // namespace

Result<uint64_t> ParseMemorySize(std::string_view text) {
  uint64_t value = 0;
  size_t i = 0;
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i) {
    const uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
      return Fail(ERANGE, fmt::format("'{}' is too large", text));
    }
    value = value * 10 + digit;
  }
  if (i == 0) return Fail(EINVAL, fmt::format("'{}' is not a size (NUMBER[K|M|G|T])", text));
  unsigned shift = 0;
  if (i < text.size()) {
    switch (std::toupper(static_cast<unsigned char>(text[i]))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      default: return Fail(EINVAL, fmt::format("'{}' is not a size (NUMBER[K|M|G|T])", text));
    }
    if (i + 1 != text.size()) return Fail(EINVAL, fmt::format("'{}' is not a size (NUMBER[K|M|G|T])", text));
  }
  if (value > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return Fail(ERANGE, fmt::format("'{}' is too large", text));
  }
  return value << shift;
}

Outcome LibvirtXml(const Transport& call, const LibvirtXmlOptions& options) {
  auto active = ActiveDevices(call);
  if (!active.has_value()) return Report(active.error());
  std::vector<Attachment> attachments;
  for (size_t i = 0; i < options.uuids.size(); ++i) {
    const Uuid& uuid = options.uuids[i];
    // QEMU refuses two devices with one id.
    if (std::find(options.uuids.begin(), options.uuids.begin() + static_cast<ptrdiff_t>(i), uuid) !=
        options.uuids.begin() + static_cast<ptrdiff_t>(i)) {
      return Report(Failure{fmt::format("Mediated device {} is named twice", uuid.ToString()), ""});
    }
    auto attachment =
        AttachmentOf(call, *active, uuid, SocketDirFor(options.state_dir, options.socket_dir));
    if (!attachment.has_value()) return Report(attachment.error());
    attachments.push_back(std::move(*attachment));
  }
  auto bound = BoundUuid(attachments);
  if (!bound.has_value()) return Report(bound.error());

  if (!options.domain.has_value()) {
    std::string out = fmt::format("<!-- on the <domain> element: xmlns:qemu='{}' -->\n", kQemuNamespace);
    if (!bound->empty()) {
      out += fmt::format("<!-- the device opens only for the VM whose UUID is {0}: -->\n<uuid>{0}</uuid>\n",
                         *bound);
    }
    return Outcome{0, out + Fragments(attachments, ""), ""};
  }

  auto bytes = ParseMemorySize(options.memory);
  if (!bytes.has_value()) return Report(Failure{"Invalid --memory: " + bytes.error().context, ""});
  // libvirt counts in KiB; a memfd backend wants whole pages.
  if (*bytes < (1u << 20) || *bytes % 4096 != 0) {
    return Report(Failure{fmt::format("Invalid --memory: '{}' is not a whole number of pages of at "
                                      "least 1M",
                                      options.memory),
                          ""});
  }
  std::string out = fmt::format("<domain type='{}' xmlns:qemu='{}'>\n", XmlEscape(options.virt_type),
                                kQemuNamespace);
  out += fmt::format("  <name>{}</name>\n", XmlEscape(*options.domain));
  if (!bound->empty()) out += fmt::format("  <uuid>{}</uuid>\n", *bound);
  out += fmt::format("  <memory unit='KiB'>{}</memory>\n", *bytes / 1024);
  out += fmt::format("  <vcpu>{}</vcpu>\n", options.vcpus);
  out += "  <os>\n    <type arch='x86_64' machine='q35'>hvm</type>\n  </os>\n";
  out += Fragments(attachments, "  ");
  out += "</domain>\n";
  return Outcome{0, out, ""};
}

}  // namespace umdev::cli
