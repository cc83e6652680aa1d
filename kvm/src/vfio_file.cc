// KvmVfioFile: KVM_DEV_VFIO_FILE_ADD / _DEL on one group file.
#include "umdev/kvm/vfio_file.h"

namespace umdev::kvm {

Result<std::unique_ptr<KvmVfioFile>> KvmVfioFile::Add(std::shared_ptr<GroupFile> file,
                                                      std::shared_ptr<const Vm> vm) {
  UMDEV_ASSIGN_OR_RETURN(ExternalGroupRef ref, ExternalGroupRef::Get(*file));
  file->SetVm(std::move(vm));
  return std::unique_ptr<KvmVfioFile>(new KvmVfioFile(std::move(file), std::move(ref)));
}

KvmVfioFile::~KvmVfioFile() {
  // kvm_vfio_file_del's order: forget the VM, then drop the file.
  file_->SetVm(nullptr);
  ref_.Put();
}

}  // namespace umdev::kvm
