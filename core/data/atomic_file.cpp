// Temp, write, fsync, rename, fsync folder: see atomic_file.h.
#include "core/data/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <system_error>

#include <glog/logging.h>

namespace iisan::data {
namespace {

std::string Format(const std::filesystem::path& path, const std::string& what, int error_number) {
  std::string text = path.string() + ": " + what;
  if (error_number != 0) text += ": " + std::string(std::strerror(error_number));
  return text;
}

std::filesystem::path FolderOf(const std::filesystem::path& path) {
  return path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
}

void CloseQuietly(int fd) {
  if (fd >= 0) ::close(fd);
}

// fsync, retried on EINTR.
int Fsync(int fd) {
  int result;
  do {
    result = ::fsync(fd);
  } while (result != 0 && errno == EINTR);
  return result;
}

// Writes all of `size` bytes; 0, or the errno of the write that failed (EIO for a write of 0).
int WriteAll(int fd, const void* data, size_t size) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    bytes += n;
    size -= static_cast<size_t>(n);
  }
  return 0;
}

}  // namespace

FileWriteError::FileWriteError(const std::filesystem::path& path, const std::string& what, int error_number)
    : std::runtime_error(Format(path, what, error_number)), path_(path), error_number_(error_number) {}

std::filesystem::path TemporaryPathFor(const std::filesystem::path& target) {
  static std::atomic<uint64_t> counter{0};
  auto temp = target;
  temp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  return temp;
}

void SyncDirectory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw FileWriteError(dir, "cannot open the folder to sync it", errno);
  if (Fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    // Some filesystems cannot sync a folder at all; that is no failure of this write.
    if (error == EINVAL || error == ENOTSUP) return;
    throw FileWriteError(dir, "fsync of the folder failed", error);
  }
  ::close(fd);
}

void SyncFilesystemOf(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw FileWriteError(dir, "cannot open the folder to sync it", errno);
  if (::syncfs(fd) != 0) {
    const int error = errno;
    ::close(fd);
    throw FileWriteError(dir, "syncfs failed", error);
  }
  ::close(fd);
}

AtomicFile::AtomicFile(std::filesystem::path target)
    : target_(std::move(target)), temp_(TemporaryPathFor(target_)) {}

AtomicFile::~AtomicFile() {
  if (!done_) Abandon();
}

int AtomicFile::Open() {
  if (done_) throw FileWriteError(target_, "AtomicFile::Open after Commit", 0);
  CloseQuietly(fd_);
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw FileWriteError(temp_, "cannot create the temporary file", errno);
  return fd_;
}

void AtomicFile::Write(const void* data, size_t size) {
  if (fd_ < 0) Open();
  if (const int error = WriteAll(fd_, data, size); error != 0) {
    Abandon();
    throw FileWriteError(temp_, "write failed", error);
  }
}

void AtomicFile::Commit() {
  if (done_) throw FileWriteError(target_, "AtomicFile::Commit called twice", 0);
  const auto fail = [&](const std::filesystem::path& path, const std::string& what, int error) {
    Abandon();
    throw FileWriteError(path, what, error);
  };
  if (fd_ < 0) {
    // Written and closed by someone else (e.g. the HDF5 library): reopen to sync it.
    fd_ = ::open(temp_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) fail(temp_, "cannot open the temporary file to sync it", errno);
  }
  // Durable before it is visible: otherwise a crash could leave the new name on missing data.
  if (Fsync(fd_) != 0) fail(temp_, "fsync failed", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0 && errno != EINTR) fail(temp_, "close failed", errno);
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    fail(target_, "cannot rename " + temp_.filename().string() + " into place", errno);
  }
  done_ = true;
  // The rename itself is durable once the folder is synced. The new file is in place already,
  // so a failure here is reported but there is no temporary left to remove.
  SyncDirectory(FolderOf(target_));
}

void AtomicFile::Abandon() noexcept {
  CloseQuietly(fd_);
  fd_ = -1;
  ::unlink(temp_.c_str());
  done_ = true;
}

void WriteFileAtomically(const std::filesystem::path& path, std::string_view bytes) {
  AtomicFile file(path);
  file.Open();
  file.Write(bytes.data(), bytes.size());
  file.Commit();
}

void AppendDurably(const std::filesystem::path& path, std::string_view bytes) {
  std::error_code ignored;
  const bool existed = std::filesystem::exists(path, ignored);
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw FileWriteError(path, "cannot open to append", errno);
  int error = WriteAll(fd, bytes.data(), bytes.size());
  const char* what = "append failed";
  if (error == 0 && Fsync(fd) != 0) error = errno, what = "fsync failed";
  if (::close(fd) != 0 && error == 0 && errno != EINTR) error = errno, what = "close failed";
  if (error != 0) throw FileWriteError(path, what, error);
  // A file this call created is durable only once its folder's entry is.
  if (!existed) SyncDirectory(FolderOf(path));
}

int RemoveTemporariesOfDeadWriters(const std::filesystem::path& target) {
  const std::string prefix = target.filename().string() + ".tmp.";
  std::error_code error;
  int removed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(FolderOf(target), error)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    std::string rest = name.substr(prefix.size());
    const auto dot = rest.find('.');
    const std::string pid_text = rest.substr(0, dot);
    const std::string counter_text = dot == std::string::npos ? "" : rest.substr(dot + 1);
    const auto digits = [](const std::string& text) {
      return !text.empty() && text.size() <= 18 && text.find_first_not_of("0123456789") == std::string::npos;
    };
    if (!digits(pid_text) || pid_text.size() > 9) continue;
    if (dot != std::string::npos && !digits(counter_text)) continue;
    const auto pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid <= 0 || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    std::error_code ignored;
    if (std::filesystem::remove(entry.path(), ignored)) {
      ++removed;
      LOG(WARNING) << "removed " << entry.path() << ", left by a writer (pid " << pid << ") that no longer runs";
    }
  }
  return removed;
}

}  // namespace iisan::data
