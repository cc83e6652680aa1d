// ControlClient: umdevctl's connection to a running umdevd.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "umdev/common/error.h"
#include "umdev/common/unique_fd.h"

namespace umdev::control {

// Thread-compatible: one request at a time.
class ControlClient {
 public:
  // Errors: ENOENT/ECONNREFUSED no daemon on |socket_path|; connect's errno.
  static Result<ControlClient> Connect(const std::string& socket_path);
  // Bounds each send and each wait for a reply (none by default), for
  // callers that must not hang on a daemon that stopped answering; a call
  // past it fails with ETIMEDOUT and the connection must be dropped.
  Result<void> SetTimeout(std::chrono::milliseconds timeout);
  // Sends |request| and returns the reply's body when "ok" is true.
  // Errors: the daemon's errno; EPROTO malformed reply; I/O errno.
  Result<nlohmann::json> Call(const nlohmann::json& request);
  // Sends |request| and returns the whole reply, "ok" true or false, for
  // callers that read a failure's extra fields. Errors: EPROTO; I/O errno.
  Result<nlohmann::json> Exchange(const nlohmann::json& request);

 private:
  explicit ControlClient(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
  std::string buffered_;
};

}  // namespace umdev::control
