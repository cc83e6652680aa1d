// Control protocol: error replies.
#include "umdev/control/protocol.h"

namespace umdev::control {

nlohmann::json ErrorReply(const Error& error) {
  return {{"ok", false},
          {"errno", error.code},
          {"errname", std::string(ErrnoName(error.code))},
          {"message", error.context}};
}

Error ErrorFromReply(const nlohmann::json& reply) {
  if (!reply.is_object() || !reply.contains("errno") || !reply["errno"].is_number_integer()) {
    return Error{EPROTO, "malformed reply from umdevd"};
  }
  const auto message = reply.value("message", std::string("umdevd reported an error"));
  return Error{reply["errno"].get<int>(), message};
}

}  // namespace umdev::control
