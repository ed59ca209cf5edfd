// The digests of the cache key's input files (backbone weights, item images), remembered between
// processes by what the file system says of each file: its path, size, modification and change
// times, inode and device. A job that starts again on unchanged files stats them instead of
// reading them all: 20,314 images and two backbones' weights at every start of a text+image run.
// Any write to a file gives it a new change time, which no program can set back, so a changed
// file is digested again. A file changed less than kRacySeconds before it is looked at is never
// remembered (two writes within one tick of the file system's clock can leave the same times;
// git's "racy" rule). The memo lives in files named after those stat records; a folder that
// cannot be written only costs the reads it would have saved.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace iisan::cache {

inline constexpr double kRacySeconds = 2.0;
// The memo's folder inside cache.dir (beside the caches, which `iisan cache ls` lists; it skips it).
inline constexpr const char* kDigestMemoFolder = "digests";

class DigestMemo {
 public:
  // `dir` empty: nothing is remembered, every digest is computed.
  explicit DigestMemo(std::filesystem::path dir, double racy_seconds = kRacySeconds);

  // What `compute` returns for `files` (a 16-hex-digit Digest64 of their contents; it names a
  // file it cannot read), computed only when no digest is remembered for `label` and the files'
  // present stat records.
  std::string Digest(const std::string& label, const std::vector<std::filesystem::path>& files,
                     const std::function<std::string()>& compute) const;

 private:
  std::filesystem::path dir_;
  double racy_seconds_;
};

}  // namespace iisan::cache
