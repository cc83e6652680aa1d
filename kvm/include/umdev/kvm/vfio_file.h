// KvmVfioFile: what KVM's kvm-vfio pseudo device does with one VFIO group
// file it is given (KVM_DEV_VFIO_FILE_ADD / _DEL): it records the VM on the
// file (vfio_file_set_kvm) and holds the group in its container as the
// external user, for as long as the VM keeps the file.
#pragma once

#include <memory>

#include "umdev/common/error.h"
#include "umdev/mdev_core/group.h"
#include "umdev/mdev_core/vm.h"

namespace umdev::kvm {

// Created and destroyed by the thread that attaches a client; not shared.
class KvmVfioFile {
 public:
  // FILE_ADD: |file| must be in a container with an IOMMU backend. Errors:
  // EINVAL otherwise (ExternalGroupRef::Get's).
  static Result<std::unique_ptr<KvmVfioFile>> Add(std::shared_ptr<GroupFile> file,
                                                  std::shared_ptr<const Vm> vm);
  // FILE_DEL: clears the VM from the file, then lets the group go. An open
  // device keeps the VM it latched until its last close.
  ~KvmVfioFile();
  KvmVfioFile(const KvmVfioFile&) = delete;
  KvmVfioFile& operator=(const KvmVfioFile&) = delete;

  GroupFile& file() const { return *file_; }
  const ExternalGroupRef& external_user() const { return ref_; }

 private:
  KvmVfioFile(std::shared_ptr<GroupFile> file, ExternalGroupRef ref)
      : file_(std::move(file)), ref_(std::move(ref)) {}

  std::shared_ptr<GroupFile> file_;
  ExternalGroupRef ref_;
};

}  // namespace umdev::kvm
