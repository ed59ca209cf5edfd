// One stat() per file against one read of every byte.
#include "cache/digest_memo.h"

#include <sys/stat.h>

#include <algorithm>
#include <ctime>

#include <glog/logging.h>

#include "cache/digest.h"
#include "core/data/atomic_file.h"
#include "core/data/json_input.h"

namespace iisan::cache {
namespace {

double Seconds(const timespec& time) { return static_cast<double>(time.tv_sec) + 1e-9 * static_cast<double>(time.tv_nsec); }

}  // namespace

DigestMemo::DigestMemo(std::filesystem::path dir, double racy_seconds)
    : dir_(std::move(dir)), racy_seconds_(racy_seconds) {}

std::string DigestMemo::Digest(const std::string& label, const std::vector<std::filesystem::path>& files,
                               const std::function<std::string()>& compute) const {
  if (dir_.empty()) return compute();
  // The stat records of every file, digested into the memo's name; a file that cannot be stat'ed
  // or that changed too recently is left to `compute` (which names a missing file).
  Digest64 records;
  records.Field("digest memo 1").Field(label);
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  for (const auto& file : files) {
    struct stat info {};
    if (::stat(file.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) return compute();
    if (Seconds(now) - std::max(Seconds(info.st_mtim), Seconds(info.st_ctim)) < racy_seconds_) return compute();
    const int64_t fields[] = {static_cast<int64_t>(info.st_size), info.st_mtim.tv_sec, info.st_mtim.tv_nsec,
                              info.st_ctim.tv_sec, info.st_ctim.tv_nsec, static_cast<int64_t>(info.st_ino),
                              static_cast<int64_t>(info.st_dev)};
    records.Field(file.string()).Update(fields, sizeof fields);
  }
  const auto memo = dir_ / (records.Hex() + ".digest");
  try {
    std::string remembered = data::ReadBoundedFile(memo, 64);
    while (!remembered.empty() && remembered.back() == '\n') remembered.pop_back();
    if (IsCacheKey(remembered)) return remembered;
  } catch (const std::exception&) {
    // Not remembered yet (or not readable): computed below.
  }
  const std::string digest = compute();
  try {
    std::filesystem::create_directories(dir_);
    data::WriteFileAtomically(memo, digest + "\n");
  } catch (const std::exception& error) {
    LOG(WARNING) << "cannot remember the digest of " << label << " in " << memo << " (" << error.what()
                 << "); it is computed again at the next start";
  }
  return digest;
}

}  // namespace iisan::cache
