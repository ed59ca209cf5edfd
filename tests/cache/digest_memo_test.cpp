// The digest memo: unchanged files are read once, by any number of processes; a file changed in
// size, content or identity is read again; files changed too recently, or no memo folder, are
// never remembered; a file that cannot be read is the digest's own error.
#include "cache/digest_memo.h"

#include <fstream>

#include <gtest/gtest.h>

#include "cache/digest.h"
#include "cache/state_file.h"
#include "tests/cache/cache_test_data.h"

namespace iisan::cache {
namespace {

namespace fs = std::filesystem;
using testing::FreshDir;
using testing::WriteText;

TEST(DigestMemoTest, UnchangedFilesAreReadOnceChangedOnesAgain) {
  const auto dir = FreshDir("memo");
  const std::vector<fs::path> files = {dir / "a.jpg", dir / "b.jpg"};
  WriteText(files[0], "first image");
  WriteText(files[1], "second image");
  int reads = 0;
  const auto digest_files = [&] {
    ++reads;
    Digest64 digest;
    for (const auto& file : files) digest.File(file).Field("");
    return digest.Hex();
  };
  // No racy window here: the files were written a moment ago.
  const DigestMemo memo(dir / "memo", /*racy_seconds=*/0.0);
  const auto first = memo.Digest("images", files, digest_files);
  EXPECT_EQ(reads, 1);
  EXPECT_EQ(first, Digest64().File(files[0]).Field("").File(files[1]).Field("").Hex());
  EXPECT_EQ(memo.Digest("images", files, digest_files), first);
  EXPECT_EQ(DigestMemo(dir / "memo", 0.0).Digest("images", files, digest_files), first) << "another process";
  EXPECT_EQ(reads, 1) << "unchanged files were read again";
  memo.Digest("weights", files, digest_files);
  EXPECT_EQ(reads, 2) << "another label is another digest";

  // Grown in place, then replaced by a file of the same size (another inode): read again, each.
  std::ofstream(files[1], std::ios::app) << "!";
  const auto grown = memo.Digest("images", files, digest_files);
  EXPECT_EQ(reads, 3);
  EXPECT_NE(grown, first);
  WriteText(dir / "replacement", "first imagE");
  fs::rename(dir / "replacement", files[0]);
  const auto replaced = memo.Digest("images", files, digest_files);
  EXPECT_EQ(reads, 4);
  EXPECT_NE(replaced, grown);
  EXPECT_EQ(replaced, Digest64().File(files[0]).Field("").File(files[1]).Field("").Hex());
}

TEST(DigestMemoTest, RecentlyChangedFilesAndNoFolderAreNeverRemembered) {
  const auto dir = FreshDir("memo");
  const std::vector<fs::path> files = {dir / "w.safetensors"};
  WriteText(files[0], "weights");
  int reads = 0;
  const auto digest_files = [&] {
    ++reads;
    return Digest64().File(files[0]).Hex();
  };
  // Changed within the last hour: a write within the same clock tick would leave equal times.
  const DigestMemo cautious(dir / "memo", /*racy_seconds=*/3600.0);
  cautious.Digest("weights", files, digest_files);
  cautious.Digest("weights", files, digest_files);
  EXPECT_EQ(reads, 2);
  EXPECT_FALSE(fs::exists(dir / "memo"));
  const DigestMemo none{fs::path()};
  none.Digest("weights", files, digest_files);
  none.Digest("weights", files, digest_files);
  EXPECT_EQ(reads, 4);

  // A file that is gone is left to the digest, whose error names it.
  const DigestMemo memo(dir / "memo", 0.0);
  try {
    memo.Digest("weights", {dir / "gone"}, [&] { return Digest64().File(dir / "gone").Hex(); });
    ADD_FAILURE() << "a missing file was digested";
  } catch (const CacheError& error) {
    EXPECT_NE(std::string(error.what()).find((dir / "gone").string()), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace iisan::cache
