// SharedAddressSpace: counted mappings over one backend; views per session.
#include "shared_iommu.h"

#include <sys/stat.h>

#include <fmt/format.h>

#include <algorithm>

namespace umdev::vfio_user {

Result<SharedAddressSpace::Key> SharedAddressSpace::Map(DmaMapRequest request) {
  if (!request.fd) {
    return Fail(EINVAL, fmt::format("DMA_MAP of {:#x} bytes at IOVA {:#x} without an fd: the "
                                    "devices of a shared IOMMU group reach only shared memory",
                                    request.size, request.iova));
  }
  struct stat st {};
  if (::fstat(request.fd.get(), &st) != 0) return FailErrno("fstat a DMA_MAP fd");
  const Key key{request.iova, request.size, request.prot, st.st_dev, st.st_ino, request.offset};
  MutexLock lock(mu_);
  if (auto found = users_.find(key); found != users_.end()) {
    ++found->second;
    return key;
  }
  UMDEV_TRY(backend_->Map(std::move(request)));
  users_.emplace(key, 1);
  return key;
}

Result<uint64_t> SharedAddressSpace::Release(const Key& key) {
  MutexLock lock(mu_);
  auto found = users_.find(key);
  if (found == users_.end()) return uint64_t{0};
  if (--found->second > 0) return uint64_t{0};
  users_.erase(found);
  return backend_->Unmap(key.iova, key.size);
}

SharedAddressSpaceView::~SharedAddressSpaceView() { (void)UnmapAll(); }

Result<void> SharedAddressSpaceView::Map(DmaMapRequest request) {
  UMDEV_ASSIGN_OR_RETURN(const SharedAddressSpace::Key key, space_->Map(std::move(request)));
  MutexLock lock(mu_);
  mine_.push_back(key);
  return {};
}

Result<uint64_t> SharedAddressSpaceView::Unmap(uint64_t iova, uint64_t size) {
  if (size == 0 || iova + size < iova) {
    return Fail(EINVAL, fmt::format("unmap [{:#x}, +{:#x}): an empty or wrapping range", iova, size));
  }
  std::vector<SharedAddressSpace::Key> leaving;
  {
    MutexLock lock(mu_);
    for (const auto& key : mine_) {
      const bool inside = key.iova >= iova && key.iova + key.size <= iova + size;
      const bool overlaps = key.iova < iova + size && iova < key.iova + key.size;
      if (overlaps && !inside) {
        return Fail(EINVAL, fmt::format("unmap [{:#x}, +{:#x}) would split the mapping at {:#x}",
                                        iova, size, key.iova));
      }
      if (inside) leaving.push_back(key);
    }
    std::erase_if(mine_, [&](const auto& key) {
      return std::find(leaving.begin(), leaving.end(), key) != leaving.end();
    });
  }
  uint64_t bytes = 0;
  for (const auto& key : leaving) {
    UMDEV_TRY(space_->Release(key));
    bytes += key.size;
  }
  return bytes;
}

Result<uint64_t> SharedAddressSpaceView::UnmapAll() {
  std::vector<SharedAddressSpace::Key> leaving;
  {
    MutexLock lock(mu_);
    leaving.swap(mine_);
  }
  uint64_t bytes = 0;
  for (const auto& key : leaving) {
    (void)space_->Release(key);
    bytes += key.size;
  }
  return bytes;
}

size_t SharedAddressSpaceView::mapping_count() const {
  MutexLock lock(mu_);
  return mine_.size();
}

}  // namespace umdev::vfio_user
