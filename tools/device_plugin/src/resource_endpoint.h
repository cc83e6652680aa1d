// ResourceEndpoint: one resource's DevicePlugin gRPC server on its socket in
// kubelet's device-plugin folder, and its registration with kubelet.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>

#include "deviceplugin.grpc.pb.h"
#include "umdev/common/error.h"
#include "umdev/device_plugin/allocation.h"
#include "umdev/device_plugin/config.h"
#include "umdev/device_plugin/device_board.h"

namespace umdev::device_plugin {

// Called by gRPC's threads (kubelet's calls); state comes from the board.
class ResourceService final : public v1beta1::DevicePlugin::Service {
 public:
  ResourceService(const ResourceSpec& resource, size_t index, DeviceBoard& board, SocketLayout layout)
      : resource_(resource), index_(index), board_(board), layout_(std::move(layout)) {}

  grpc::Status GetDevicePluginOptions(grpc::ServerContext* context, const v1beta1::Empty* request,
                                      v1beta1::DevicePluginOptions* reply) override;
  grpc::Status ListAndWatch(grpc::ServerContext* context, const v1beta1::Empty* request,
                            grpc::ServerWriter<v1beta1::ListAndWatchResponse>* writer) override;
  grpc::Status GetPreferredAllocation(grpc::ServerContext* context,
                                      const v1beta1::PreferredAllocationRequest* request,
                                      v1beta1::PreferredAllocationResponse* reply) override;
  grpc::Status Allocate(grpc::ServerContext* context, const v1beta1::AllocateRequest* request,
                        v1beta1::AllocateResponse* reply) override;
  grpc::Status PreStartContainer(grpc::ServerContext* context,
                                 const v1beta1::PreStartContainerRequest* request,
                                 v1beta1::PreStartContainerResponse* reply) override;

 private:
  const ResourceSpec& resource_;
  const size_t index_;
  DeviceBoard& board_;
  const SocketLayout layout_;
};

// Poll-loop thread only (the service inside runs on gRPC's threads).
class ResourceEndpoint {
 public:
  ResourceEndpoint(const ResourceSpec& resource, size_t index, DeviceBoard& board, SocketLayout layout,
                   std::string plugin_dir);
  ~ResourceEndpoint() { Stop(); }
  ResourceEndpoint(const ResourceEndpoint&) = delete;
  ResourceEndpoint& operator=(const ResourceEndpoint&) = delete;

  // The socket's file name in the plugin folder: umdev-NAME.sock.
  const std::string& endpoint() const { return endpoint_; }
  bool serving() const { return server_ != nullptr; }
  bool registered() const { return registered_; }
  // Serves on PLUGIN_DIR/endpoint (a stale file there is replaced) and
  // registers with kubelet. Errors: EADDRINUSE/EIO the server did not start;
  // ECONNREFUSED kubelet refused or was not there (the server keeps serving,
  // so Register() may be tried again).
  Result<void> Start();
  Result<void> Register();
  // Ends the streams (within a second), stops serving, removes the socket.
  void Stop();
  // The socket file is gone (kubelet restarted and cleared the folder).
  bool SocketMissing() const;

 private:
  const ResourceSpec& resource_;
  const std::string plugin_dir_;
  const std::string endpoint_;
  ResourceService service_;
  std::unique_ptr<grpc::Server> server_;
  bool registered_ = false;
};

}  // namespace umdev::device_plugin
