#include "resource_endpoint.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

namespace umdev::device_plugin {

namespace {

// kubelet's requests are small; anything larger is refused by gRPC before
// it reaches a handler.
constexpr int kMaxMessageBytes = 1 << 20;
// Concurrent calls (each ListAndWatch holds one thread for its stream).
constexpr int kMaxServerThreads = 16;
constexpr size_t kMaxContainerRequests = 256;
// How often a ListAndWatch stream looks whether kubelet went away.
constexpr std::chrono::milliseconds kStreamCheck{250};
constexpr std::chrono::seconds kRegisterTimeout{5};

constexpr const char* kHealthy = "Healthy";
constexpr const char* kUnhealthy = "Unhealthy";

grpc::Status StatusOf(const Error& error) {
  const grpc::StatusCode code = error.code == EINVAL ? grpc::StatusCode::INVALID_ARGUMENT
                                : error.code == ENODEV ? grpc::StatusCode::FAILED_PRECONDITION
                                                       : grpc::StatusCode::INTERNAL;
  return grpc::Status(code, error.context);
}

v1beta1::ListAndWatchResponse ListOf(const DeviceBoard::Snapshot& snapshot) {
  v1beta1::ListAndWatchResponse response;
  for (const DeviceState& d : snapshot.devices) {
    v1beta1::Device* device = response.add_devices();
    device->set_id(d.id);
    device->set_health(d.healthy ? kHealthy : kUnhealthy);
  }
  return response;
}

std::vector<std::string> Strings(const google::protobuf::RepeatedPtrField<std::string>& field) {
  return {field.begin(), field.end()};
}

}  // namespace

grpc::Status ResourceService::GetDevicePluginOptions(grpc::ServerContext*, const v1beta1::Empty*,
                                                     v1beta1::DevicePluginOptions* reply) {
  reply->set_pre_start_required(false);
  reply->set_get_preferred_allocation_available(true);
  return grpc::Status::OK;
}

grpc::Status ResourceService::ListAndWatch(grpc::ServerContext* context, const v1beta1::Empty*,
                                           grpc::ServerWriter<v1beta1::ListAndWatchResponse>* writer) {
  DeviceBoard::Snapshot snapshot = board_.Get(index_);
  bool sent = false;
  while (!context->IsCancelled() && !board_.closed()) {
    if (snapshot.version != 0 && !sent) {
      if (!writer->Write(ListOf(snapshot))) break;  // kubelet went away.
      sent = true;
    }
    if (auto changed = board_.WaitForChange(index_, snapshot.version, kStreamCheck)) {
      snapshot = std::move(*changed);
      sent = false;
    }
  }
  return grpc::Status::OK;
}

grpc::Status ResourceService::GetPreferredAllocation(grpc::ServerContext*,
                                                     const v1beta1::PreferredAllocationRequest* request,
                                                     v1beta1::PreferredAllocationResponse* reply) {
  if (static_cast<size_t>(request->container_requests_size()) > kMaxContainerRequests) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "too many container requests");
  }
  const DeviceBoard::Snapshot snapshot = board_.Get(index_);
  for (const auto& container : request->container_requests()) {
    auto chosen = PreferredAllocation(snapshot.devices, Strings(container.available_deviceids()),
                                      Strings(container.must_include_deviceids()),
                                      container.allocation_size());
    if (!chosen.has_value()) return StatusOf(chosen.error());
    auto* response = reply->add_container_responses();
    for (const std::string& id : *chosen) response->add_deviceids(id);
  }
  return grpc::Status::OK;
}

grpc::Status ResourceService::Allocate(grpc::ServerContext*, const v1beta1::AllocateRequest* request,
                                       v1beta1::AllocateResponse* reply) {
  if (static_cast<size_t>(request->container_requests_size()) > kMaxContainerRequests) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "too many container requests");
  }
  const DeviceBoard::Snapshot snapshot = board_.Get(index_);
  for (const auto& container : request->container_requests()) {
    auto allocation = AllocateContainer(resource_, snapshot.devices, Strings(container.devices_ids()), layout_);
    if (!allocation.has_value()) {
      spdlog::warn("{}: Allocate refused: {}", resource_.FullName(), allocation.error().context);
      return StatusOf(allocation.error());
    }
    auto* response = reply->add_container_responses();
    for (const auto& [key, value] : allocation->envs) (*response->mutable_envs())[key] = value;
    for (const SocketMount& m : allocation->mounts) {
      v1beta1::Mount* mount = response->add_mounts();
      mount->set_container_path(m.container_path);
      mount->set_host_path(m.host_path);
      mount->set_read_only(false);  // A socket is connected to, which needs write access.
    }
    for (const std::string& name : allocation->cdi_devices) response->add_cdi_devices()->set_name(name);
    spdlog::info("{}: allocated {}", resource_.FullName(), allocation->envs["UMDEV_SOCKETS"]);
  }
  return grpc::Status::OK;
}

grpc::Status ResourceService::PreStartContainer(grpc::ServerContext*, const v1beta1::PreStartContainerRequest*,
                                                v1beta1::PreStartContainerResponse*) {
  return grpc::Status::OK;  // Not asked for (pre_start_required is false).
}

ResourceEndpoint::ResourceEndpoint(const ResourceSpec& resource, size_t index, DeviceBoard& board,
                                   SocketLayout layout, std::string plugin_dir)
    : resource_(resource),
      plugin_dir_(std::move(plugin_dir)),
      endpoint_("umdev-" + resource.name + ".sock"),
      service_(resource, index, board, std::move(layout)) {}

Result<void> ResourceEndpoint::Start() {
  Stop();
  const std::string path = plugin_dir_ + "/" + endpoint_;
  ::unlink(path.c_str());  // Ours from an earlier run; kubelet removes it on restart too.
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + path, grpc::InsecureServerCredentials());
  builder.RegisterService(&service_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  grpc::ResourceQuota quota("umdev-" + resource_.name);
  quota.SetMaxThreads(kMaxServerThreads);
  builder.SetResourceQuota(quota);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) return Fail(EADDRINUSE, fmt::format("{}: cannot serve on {}", resource_.FullName(), path));
  spdlog::info("{}: serving on {}", resource_.FullName(), path);
  return {};
}

Result<void> ResourceEndpoint::Register() {
  registered_ = false;
  auto channel = grpc::CreateChannel("unix:" + plugin_dir_ + "/kubelet.sock", grpc::InsecureChannelCredentials());
  auto stub = v1beta1::Registration::NewStub(channel);
  v1beta1::RegisterRequest request;
  request.set_version(std::string(kApiVersion));
  request.set_endpoint(endpoint_);
  request.set_resource_name(resource_.FullName());
  request.mutable_options()->set_get_preferred_allocation_available(true);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kRegisterTimeout);
  v1beta1::Empty reply;
  const grpc::Status status = stub->Register(&context, request, &reply);
  if (!status.ok()) {
    return Fail(ECONNREFUSED, fmt::format("{}: kubelet did not register it: {}", resource_.FullName(),
                                          status.error_message()));
  }
  registered_ = true;
  spdlog::info("{}: registered with kubelet as {}", resource_.FullName(), endpoint_);
  return {};
}

void ResourceEndpoint::Stop() {
  registered_ = false;
  if (server_ == nullptr) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_->Wait();
  server_.reset();
  ::unlink((plugin_dir_ + "/" + endpoint_).c_str());
}

bool ResourceEndpoint::SocketMissing() const {
  struct stat st {};
  return ::lstat((plugin_dir_ + "/" + endpoint_).c_str(), &st) != 0 || !S_ISSOCK(st.st_mode);
}

}  // namespace umdev::device_plugin
