#include "daemon_link.h"

#include "umdev/control/protocol.h"

namespace umdev::device_plugin {

namespace {
constexpr std::chrono::seconds kCallTimeout{5};
}  // namespace

Result<nlohmann::json> DaemonLink::Call(const nlohmann::json& request) {
  if (!client_.has_value()) {
    UMDEV_ASSIGN_OR_RETURN(control::ControlClient client, control::ControlClient::Connect(socket_));
    // A daemon that stops answering must not hold the poll loop (and with
    // it SIGTERM and kubelet's re-registration): its devices turn Unhealthy.
    UMDEV_TRY(client.SetTimeout(kCallTimeout));
    client_.emplace(std::move(client));
  }
  auto reply = client_->Exchange(request);
  if (!reply.has_value()) {
    // A daemon that went away leaves a dead connection: the next call dials again.
    client_.reset();
    return std::unexpected(reply.error());
  }
  const auto ok = reply->find("ok");
  if (ok == reply->end() || !ok->is_boolean() || !ok->get<bool>()) {
    return std::unexpected(control::ErrorFromReply(*reply));
  }
  return reply;
}

Result<DaemonView> DaemonLink::View() {
  UMDEV_ASSIGN_OR_RETURN(const nlohmann::json types, Call({{"cmd", "types"}}));
  UMDEV_ASSIGN_OR_RETURN(const nlohmann::json list, Call({{"cmd", "list"}}));
  UMDEV_ASSIGN_OR_RETURN(const nlohmann::json defined, Call({{"cmd", "defined"}}));
  return ParseDaemonView(types, list, defined);
}

Result<void> DaemonLink::Apply(const InstanceAction& action) {
  if (action.kind == InstanceAction::Kind::kDefine) {
    UMDEV_ASSIGN_OR_RETURN(
        const nlohmann::json defined,
        Call({{"cmd", "define"},
              {"parent", action.parent},
              {"uuid", action.uuid},
              {"config", {{"mdev_type", action.type}, {"start", "auto"}, {"attrs", nlohmann::json::array()}}}}));
    (void)defined;
  }
  UMDEV_ASSIGN_OR_RETURN(
      const nlohmann::json started,
      Call({{"cmd", "start"}, {"parent", action.parent}, {"type", action.type}, {"uuid", action.uuid}}));
  (void)started;
  return {};
}

}  // namespace umdev::device_plugin
