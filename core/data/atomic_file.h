// The one way this program replaces a file that a later run trusts (DESIGN.md, "Guarantees"):
// write a temporary file in the target's folder, fsync it, rename it over the target, fsync the
// folder. A reader sees the old file or the new one, never a torn one, and after a crash (kill -9
// or power loss) the target is one whole version. On any failure the temporary file is removed,
// the target is untouched, and FileWriteError names the path and the system's reason.
//
// Temporary names are "<target name>.tmp.<pid>.<n>" (n counts up within a process), so writers
// in one process or in several never share one; RemoveTemporariesOfDeadWriters removes those
// whose process no longer runs.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace iisan::data {

// A file could not be written, synced or renamed into place. what() is
// "<path>: <what failed>: <strerror text>", e.g. "out/a.json.tmp.12.0: write failed: No space
// left on device".
class FileWriteError : public std::runtime_error {
 public:
  FileWriteError(const std::filesystem::path& path, const std::string& what, int error_number);

  const std::filesystem::path& path() const { return path_; }
  int error_number() const { return error_number_; }  // errno, 0 when there was none

 private:
  std::filesystem::path path_;
  int error_number_;
};

// Replaces `path` with `bytes` as a whole (temp, write, fsync, rename, fsync folder). The folder
// must exist. Throws FileWriteError.
void WriteFileAtomically(const std::filesystem::path& path, std::string_view bytes);

// Appends `bytes` to `path` (created when missing), then fsyncs it, and its folder when this
// call created it: a line appended to a log that later runs read (metrics.jsonl) survives a
// crash once this returns. A kill or a full disk mid-write can still leave a torn last line,
// which readers must expect. Throws FileWriteError.
void AppendDurably(const std::filesystem::path& path, std::string_view bytes);

// For writers that produce the file themselves (the HDF5 library, a streaming writer): hands out
// a temporary path beside the target; Commit() makes it durable and renames it over the target.
// An AtomicFile destroyed without Commit() (an exception, an early return) removes its temporary.
//
//   AtomicFile file(target);
//   H5Fcreate(file.temp_path().c_str(), ...); ...; H5Fclose(...);   // or file.Write(...)
//   file.Commit();
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path target);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::filesystem::path& target() const { return target_; }
  const std::filesystem::path& temp_path() const { return temp_; }

  // Creates (truncates) the temporary file and keeps its descriptor open for Write, which
  // writes all of `size` bytes or throws. A writer that opens temp_path() itself need not call
  // these; the file must be closed by that writer before Commit().
  int Open();
  void Write(const void* data, size_t size);

  // fsyncs the temporary file, renames it over the target, fsyncs the folder. Throws
  // FileWriteError (and removes the temporary) on failure. At most once.
  void Commit();

  // Removes the temporary file now (no error if it does not exist); the target is untouched.
  void Abandon() noexcept;

 private:
  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
  bool done_ = false;
};

// A fresh temporary name beside `target` ("<name>.tmp.<pid>.<n>"); nothing is created.
std::filesystem::path TemporaryPathFor(const std::filesystem::path& target);

// fsyncs a folder, so that entries created, renamed or removed in it survive a crash. Throws
// FileWriteError.
void SyncDirectory(const std::filesystem::path& dir);

// Makes everything written so far under `dir` durable with one syncfs(2) of its filesystem:
// for a staging folder of many files about to be swapped in by a rename (a fsync per file
// costs a journal commit each). Throws FileWriteError.
void SyncFilesystemOf(const std::filesystem::path& dir);

// Removes "<target name>.tmp.<pid>" and "<target name>.tmp.<pid>.<n>" files beside `target`
// whose process no longer exists on this machine (writers killed before they could clean up).
// Returns how many were removed; errors are ignored (a best-effort cleanup).
int RemoveTemporariesOfDeadWriters(const std::filesystem::path& target);

}  // namespace iisan::data
