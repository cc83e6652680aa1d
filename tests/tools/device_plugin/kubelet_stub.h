// KubeletStub: what kubelet is to a device plugin, without a cluster — a
// Registration server on PLUGIN_DIR/kubelet.sock that records each
// RegisterRequest, and a client that calls the plugin's endpoints as
// kubelet would.
#pragma once

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "deviceplugin.grpc.pb.h"

namespace umdev::test {

// Registration is called on gRPC's threads; the test thread reads.
class KubeletStub final : public v1beta1::Registration::Service {
 public:
  explicit KubeletStub(std::string plugin_dir) : plugin_dir_(std::move(plugin_dir)) {}
  ~KubeletStub() override { Stop(); }

  bool Start() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + plugin_dir_ + "/kubelet.sock", grpc::InsecureServerCredentials());
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    return server_ != nullptr;
  }
  // As kubelet does when it stops: its socket goes, and on restart it
  // clears the plugins' sockets too.
  void Stop() {
    if (server_ == nullptr) return;
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
    server_.reset();
    ::unlink((plugin_dir_ + "/kubelet.sock").c_str());
  }

  grpc::Status Register(grpc::ServerContext*, const v1beta1::RegisterRequest* request, v1beta1::Empty*) override {
    std::lock_guard lock(mu_);
    if (refusals_left_ > 0) {
      // As kubelet refuses a resource name another plugin holds.
      --refusals_left_;
      ++refused_;
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "resource name taken");
    }
    registrations_.push_back(*request);
    changed_.notify_all();
    return grpc::Status::OK;
  }
  // The next |count| Register calls fail.
  void RefuseNext(int count) {
    std::lock_guard lock(mu_);
    refusals_left_ = count;
  }
  int refused() {
    std::lock_guard lock(mu_);
    return refused_;
  }

  // Waits (up to 20 s) until |count| registrations have been recorded.
  std::vector<v1beta1::RegisterRequest> WaitForRegistrations(size_t count) {
    std::unique_lock lock(mu_);
    changed_.wait_for(lock, std::chrono::seconds(20), [&] { return registrations_.size() >= count; });
    return registrations_;
  }

  // kubelet's side of one plugin endpoint.
  std::unique_ptr<v1beta1::DevicePlugin::Stub> Dial(const std::string& endpoint) const {
    return v1beta1::DevicePlugin::NewStub(
        grpc::CreateChannel("unix:" + plugin_dir_ + "/" + endpoint, grpc::InsecureChannelCredentials()));
  }

 private:
  const std::string plugin_dir_;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<v1beta1::RegisterRequest> registrations_;
  int refusals_left_ = 0;
  int refused_ = 0;
};

}  // namespace umdev::test
