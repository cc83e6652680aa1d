// FuseServer: libfuse3's high-level (path) API over the Tree, with our own
// worker loop so that shutdown never waits on a read() of /dev/fuse.
#define FUSE_USE_VERSION 35
#include "umdev/sysfs/fuse_server.h"

#include <fcntl.h>
#include <fuse3/fuse.h>
#include <fuse3/fuse_lowlevel.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdarg>
#include <cstring>
#include <ctime>
#include <filesystem>

namespace umdev::sysfs {

struct MountContext {
  const Tree& tree;
  std::time_t mounted_at = 0;  // Every node's times, as sysfs shows boot time.
};

namespace {

// kernfs hands a store() at most one page.
constexpr size_t kMaxWrite = 4096;
// What stat() shows as the size of every attribute, as sysfs does.
constexpr off_t kAttributeSize = 4096;

const MountContext& Context() {
  return *static_cast<const MountContext*>(fuse_get_context()->private_data);
}
const Tree& TreeOf() { return Context().tree; }

// The kernel wants negative errnos; the tree has positive ones.
int Errno(const Error& error) { return -std::max(error.code, 1); }

void LogFromFuse(enum fuse_log_level level, const char* format, va_list args) {
  char line[512];
  std::vsnprintf(line, sizeof(line), format, args);
  std::string_view text(line);
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  if (level <= FUSE_LOG_ERR) {
    spdlog::error("sysfs: fuse: {}", text);
  } else if (level <= FUSE_LOG_NOTICE) {
    spdlog::info("sysfs: fuse: {}", text);
  } else {
    spdlog::debug("sysfs: fuse: {}", text);
  }
}

void* Init(struct fuse_conn_info* conn, struct fuse_config* config) {
  // Every read and lookup reaches the tree: values and entries are live.
  config->entry_timeout = 0;
  config->attr_timeout = 0;
  config->negative_timeout = 0;
  config->direct_io = 1;
  config->kernel_cache = 0;
  config->auto_cache = 0;
  // Requests arrive as plain buffers, which the worker loop expects.
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  return fuse_get_context()->private_data;
}

int GetAttr(const char* path, struct stat* st, struct fuse_file_info* fi) {
  (void)fi;
  auto node = TreeOf().Stat(path);
  if (!node.has_value()) return Errno(node.error());
  std::memset(st, 0, sizeof(*st));
  st->st_uid = ::geteuid();
  st->st_gid = ::getegid();
  st->st_nlink = 1;
  switch (node->kind) {
    case NodeKind::kDirectory:
      st->st_mode = S_IFDIR | node->mode;
      st->st_nlink = 2;
      break;
    case NodeKind::kFile:
      st->st_mode = S_IFREG | node->mode;
      st->st_size = kAttributeSize;
      break;
    case NodeKind::kSymlink:
      st->st_mode = S_IFLNK | node->mode;
      st->st_size = static_cast<off_t>(node->target.size());
      break;
  }
  st->st_blksize = kAttributeSize;
  st->st_atime = st->st_mtime = st->st_ctime = Context().mounted_at;
  return 0;
}

int ReadLink(const char* path, char* out, size_t size) {
  auto target = TreeOf().ReadLink(path);
  if (!target.has_value()) return Errno(target.error());
  if (size == 0) return -EINVAL;
  const size_t n = std::min(size - 1, target->size());
  std::memcpy(out, target->data(), n);
  out[n] = '\0';
  return 0;
}

int ReadDir(const char* path, void* buffer, fuse_fill_dir_t fill, off_t offset,
            struct fuse_file_info* fi, enum fuse_readdir_flags flags) {
  (void)offset;
  (void)fi;
  (void)flags;
  auto names = TreeOf().List(path);
  if (!names.has_value()) return Errno(names.error());
  fill(buffer, ".", nullptr, 0, static_cast<enum fuse_fill_dir_flags>(0));
  fill(buffer, "..", nullptr, 0, static_cast<enum fuse_fill_dir_flags>(0));
  for (const std::string& name : *names) {
    if (fill(buffer, name.c_str(), nullptr, 0, static_cast<enum fuse_fill_dir_flags>(0)) != 0) break;
  }
  return 0;
}

// kernfs_fop_open(): opening for a direction the attribute lacks is EACCES,
// whoever asks (root included).
int Open(const char* path, struct fuse_file_info* fi) {
  auto node = TreeOf().Stat(path);
  if (!node.has_value()) return Errno(node.error());
  if (node->kind == NodeKind::kDirectory) return -EISDIR;
  const int access = fi->flags & O_ACCMODE;
  if (access != O_WRONLY && (node->mode & 0444) == 0) return -EACCES;
  if (access != O_RDONLY && (node->mode & 0222) == 0) return -EACCES;
  fi->direct_io = 1;
  return 0;
}

// An attribute that vanished under an open file: kernfs says ENODEV.
int OpenFileErrno(const Error& error) { return error.code == ENOENT ? -ENODEV : Errno(error); }

int Read(const char* path, char* out, size_t size, off_t offset, struct fuse_file_info* fi) {
  (void)fi;
  auto value = TreeOf().Read(path);
  if (!value.has_value()) return OpenFileErrno(value.error());
  if (offset < 0) return -EINVAL;
  const size_t start = std::min(value->size(), static_cast<size_t>(offset));
  const size_t n = std::min(size, value->size() - start);
  std::memcpy(out, value->data() + start, n);
  return static_cast<int>(n);
}

int Write(const char* path, const char* data, size_t size, off_t offset,
          struct fuse_file_info* fi) {
  (void)offset;
  (void)fi;
  const size_t n = std::min(size, kMaxWrite);
  auto written = TreeOf().Write(path, std::string_view(data, n));
  if (!written.has_value()) {
    spdlog::debug("sysfs: write {}: {}", path, written.error().Describe());
    return OpenFileErrno(written.error());
  }
  return static_cast<int>(n);
}

// `echo > attr` opens with O_TRUNC; sysfs attributes accept it and ignore it.
int Truncate(const char* path, off_t size, struct fuse_file_info* fi) {
  (void)size;
  (void)fi;
  auto node = TreeOf().Stat(path);
  if (!node.has_value()) return Errno(node.error());
  if (node->kind == NodeKind::kDirectory) return -EISDIR;
  return (node->mode & 0222) != 0 ? 0 : -EACCES;
}

struct fuse_operations MakeOperations() {
  struct fuse_operations ops {};
  ops.getattr = GetAttr;
  ops.readlink = ReadLink;
  ops.truncate = Truncate;
  ops.open = Open;
  ops.read = Read;
  ops.write = Write;
  ops.readdir = ReadDir;
  ops.init = Init;
  return ops;
}

}  // namespace

FuseServer::FuseServer(const Tree& tree, std::string mountpoint, FuseOptions options)
    : context_(std::make_unique<MountContext>(MountContext{.tree = tree})),
      mountpoint_(std::move(mountpoint)),
      options_(options) {}

FuseServer::~FuseServer() { Stop(); }

Result<void> FuseServer::Start() {
  fuse_set_log_func(LogFromFuse);
  {
    // Say why FUSE is unusable before libfuse only logs that it is.
    UniqueFd probe(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
    if (!probe) return FailErrno("sysfs: open /dev/fuse");
  }
  struct stat st {};
  if (::stat(mountpoint_.c_str(), &st) != 0 && errno == ENOTCONN) {
    // The mount of a daemon that died: detach it so this one can mount.
    ::umount2(mountpoint_.c_str(), MNT_DETACH);
  }
  std::error_code ec;
  std::filesystem::create_directories(mountpoint_, ec);
  if (ec) return Fail(ec.value(), "sysfs: create mount point " + mountpoint_);

  wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_) return FailErrno("sysfs: eventfd");

  // sysfs is world-readable; only root may let other users into a FUSE mount.
  std::string mount_options = "default_permissions,fsname=umdev,subtype=umdev-sysfs";
  if (::geteuid() == 0) mount_options += ",allow_other";
  std::string program = "umdevd";
  std::string dash_o = "-o";
  char* argv[] = {program.data(), dash_o.data(), mount_options.data(), nullptr};
  struct fuse_args args = FUSE_ARGS_INIT(3, argv);
  const struct fuse_operations ops = MakeOperations();
  context_->mounted_at = std::time(nullptr);
  fuse_ = fuse_new(&args, &ops, sizeof(ops), context_.get());
  fuse_opt_free_args(&args);
  if (fuse_ == nullptr) return Fail(EINVAL, "sysfs: fuse_new refused the options");
  errno = 0;
  if (fuse_mount(fuse_, mountpoint_.c_str()) != 0) {
    const int code = errno != 0 ? errno : EIO;
    fuse_destroy(fuse_);
    fuse_ = nullptr;
    return Fail(code, "sysfs: mount FUSE at " + mountpoint_);
  }
  mounted_ = true;
  const int fd = fuse_session_fd(fuse_get_session(fuse_));
  // Workers poll; whichever loses the race for a request must not block.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  for (unsigned i = 0; i < std::max(options_.threads, 1u); ++i) {
    workers_.emplace_back([this] { Work(); });
  }
  spdlog::info("sysfs: mounted at {}", mountpoint_);
  return {};
}

void FuseServer::Work() {
  struct fuse_session* session = fuse_get_session(fuse_);
  const int fd = fuse_session_fd(session);
  struct fuse_buf buffer {};
  for (;;) {
    struct pollfd fds[2] = {{.fd = fd, .events = POLLIN, .revents = 0},
                            {.fd = wake_.get(), .events = POLLIN, .revents = 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("sysfs: poll: {}", std::strerror(errno));
      break;
    }
    if (fds[1].revents != 0) break;  // Stop().
    const int received = fuse_session_receive_buf(session, &buffer);
    if (received == -EAGAIN || received == -EINTR) continue;  // Another worker took it.
    if (received <= 0) {
      // 0: unmounted from outside (read() said ENODEV), e.g. `fusermount3 -uz`.
      if (received < 0) spdlog::error("sysfs: reading /dev/fuse: {}", std::strerror(-received));
      break;
    }
    fuse_session_process_buf(session, &buffer);
  }
  std::free(buffer.mem);
}

void FuseServer::Stop() {
  if (fuse_ == nullptr) return;
  const uint64_t one = 1;
  if (::write(wake_.get(), &one, sizeof(one)) < 0) {
    spdlog::error("sysfs: waking workers: {}", std::strerror(errno));
  }
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  if (mounted_) {
    // Closes /dev/fuse first (the last reference aborts the connection:
    // blocked users get ENOTCONN), then detaches the mount lazily; a mount
    // already gone (lazy unmount from outside) is left alone.
    fuse_unmount(fuse_);
    mounted_ = false;
    spdlog::info("sysfs: unmounted {}", mountpoint_);
  }
  fuse_destroy(fuse_);
  fuse_ = nullptr;
}

}  // namespace umdev::sysfs
