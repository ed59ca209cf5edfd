// LoadDataset: filtering, truncation, re-indexing, splits and popularity as IISAN.md §2.3
// specifies; every malformed input raises an InputError naming file, line and fix; and the
// Amazon Scientific counts of the paper's dataset table.
#include "core/data/dataset.h"

#include <gtest/gtest.h>

#include <numeric>
#include <stdexcept>
#include <vector>

#include "tests/core/data/test_files.h"

namespace iisan::data {
namespace {

namespace fs = std::filesystem;
using testing::Contains;
using testing::InputErrorOf;
using testing::TempDir;
using testing::WriteFile;

using Ids = std::vector<int32_t>;

Ids ToVector(std::span<const int32_t> span) { return Ids(span.begin(), span.end()); }

constexpr char kItems[] =
    "A\tTitle A\nB\tTitle B\nZ\tNever used\nC\tTitle C\nD\tTitle D\nE\tTitle E\nF\tTitle F\n"
    "G\tTitle G\nH\tTitle H\n";
// With min_seq_len 4 and max_seq_len 3 (keep the last 6): u3 is dropped, u2 loses H and G.
constexpr char kUsers[] = "u1\tA B C D E\nu2\tH G F E D C B A\nu3\tA B C\n";
constexpr PreprocessOptions kSmallOptions{.min_seq_len = 4, .max_seq_len = 3};

class DatasetTest : public ::testing::Test {
 protected:
  void Write(std::string_view users, std::string_view items) {
    WriteFile(dir_.path() / "users.tsv", users);
    WriteFile(dir_.path() / "items.tsv", items);
  }
  Dataset Load(const PreprocessOptions& options = kSmallOptions) {
    return LoadDataset(dir_.path(), options);
  }
  std::string ErrorOf(std::string_view users, std::string_view items,
                      const PreprocessOptions& options = kSmallOptions) {
    Write(users, items);
    return InputErrorOf([&] { Load(options); });
  }
  std::string UsersPath() const { return (dir_.path() / "users.tsv").string(); }
  std::string ItemsPath() const { return (dir_.path() / "items.tsv").string(); }

  TempDir dir_;
};

TEST_F(DatasetTest, FiltersTruncatesAndReindexesInItemsFileOrder) {
  Write(kUsers, kItems);
  const Dataset dataset = Load();
  EXPECT_EQ(dataset.item_ids, (std::vector<std::string>{"", "A", "B", "C", "D", "E", "F"}));
  EXPECT_EQ(dataset.titles[3], "Title C");
  EXPECT_EQ(dataset.titles[0], "");
  EXPECT_EQ(dataset.user_ids, (std::vector<std::string>{"u1", "u2"}));
  EXPECT_EQ(dataset.sequences, (std::vector<Ids>{{1, 2, 3, 4, 5}, {6, 5, 4, 3, 2, 1}}));
  EXPECT_EQ(dataset.num_items(), 6);
  EXPECT_EQ(dataset.num_users(), 2);
  EXPECT_EQ(dataset.num_interactions(), 11);
  EXPECT_EQ(dataset.dropped_users, 1);
  EXPECT_EQ(dataset.dropped_interactions, 3);
  EXPECT_EQ(dataset.image_paths, std::vector<fs::path>(7));
}

TEST_F(DatasetTest, SplitsAreLeaveOneOutWithHistoryExcluded) {
  Write(kUsers, kItems);
  const Dataset dataset = Load();
  // u2 = [6 5 4 3 2 1], L = 3.
  EXPECT_EQ(ToVector(dataset.train_sequence(1)), (Ids{6, 5, 4, 3}));
  const SplitExample valid = dataset.valid_example(1);
  EXPECT_EQ(ToVector(valid.input), (Ids{5, 4, 3}));
  EXPECT_EQ(valid.target, 2);
  EXPECT_EQ(ToVector(valid.excluded), (Ids{6, 5, 4, 3}));
  const SplitExample test = dataset.test_example(1);
  EXPECT_EQ(ToVector(test.input), (Ids{4, 3, 2}));
  EXPECT_EQ(test.target, 1);
  EXPECT_EQ(ToVector(test.excluded), (Ids{6, 5, 4, 3, 2}));
  // u1 = [1 2 3 4 5]: the valid input is the whole (short) train list.
  EXPECT_EQ(ToVector(dataset.valid_example(0).input), (Ids{1, 2, 3}));
  EXPECT_EQ(dataset.valid_example(0).target, 4);
  EXPECT_EQ(ToVector(dataset.test_example(0).input), (Ids{2, 3, 4}));
  EXPECT_EQ(dataset.test_example(0).target, 5);
  EXPECT_THROW(dataset.test_example(2), std::out_of_range);
}

TEST_F(DatasetTest, PopularityCountsTrainListsOnly) {
  Write(kUsers, kItems);
  const Dataset dataset = Load();
  // Train lists [1 2 3] and [6 5 4 3]: item 3 twice, the others once, 7 in all.
  ASSERT_EQ(dataset.popularity.size(), 7u);
  EXPECT_DOUBLE_EQ(dataset.popularity[0], 1.0);
  EXPECT_DOUBLE_EQ(dataset.popularity[3], 2.0 / 7);
  EXPECT_DOUBLE_EQ(dataset.popularity[6], 1.0 / 7);
  EXPECT_DOUBLE_EQ(std::accumulate(dataset.popularity.begin() + 1, dataset.popularity.end(), 0.0),
                   1.0);
}

TEST_F(DatasetTest, ItemsSeenOnlyAsTargetsHaveZeroPopularity) {
  Write("u1\tA B C D E\n", kItems);
  const Dataset dataset = Load();
  EXPECT_DOUBLE_EQ(dataset.popularity[4], 0.0);  // D: valid target
  EXPECT_DOUBLE_EQ(dataset.popularity[5], 0.0);  // E: test target
  EXPECT_DOUBLE_EQ(dataset.popularity[1], 1.0 / 3);
}

TEST_F(DatasetTest, DefaultOptionsKeepLastThirteen) {
  std::string users = "u1\t";
  std::string items;
  for (int i = 0; i < 20; ++i) {
    const std::string id = "I" + std::to_string(i);
    items += id + "\tTitle " + id + "\n";
    users += (i > 0 ? " " : "") + id;
  }
  Write(users + "\n", items);
  const Dataset dataset = Load(PreprocessOptions{});
  EXPECT_EQ(dataset.num_items(), 13);
  EXPECT_EQ(dataset.item_ids[1], "I7");
  EXPECT_EQ(dataset.train_sequence(0).size(), 11u);
  EXPECT_EQ(dataset.valid_example(0).input.size(), 10u);
  EXPECT_EQ(dataset.test_example(0).input.size(), 10u);
  EXPECT_EQ(dataset.test_example(0).excluded.size(), 12u);
}

TEST_F(DatasetTest, ToleratesCrlfBomBlankLinesAndExtraSpaces) {
  Write("\xEF\xBB\xBFu1\tA  B C D E \r\n\r\n\nu2\t  F E D C\t\r\n",
        "A\tTitle A  \r\nB\t Leading space\r\nC\tC\r\nD\tD\r\n\r\nE\tE\r\nF\tF\r\n");
  const Dataset dataset = Load();
  EXPECT_EQ(dataset.user_ids, (std::vector<std::string>{"u1", "u2"}));
  EXPECT_EQ(dataset.sequences, (std::vector<Ids>{{1, 2, 3, 4, 5}, {6, 5, 4, 3}}));
  EXPECT_EQ(dataset.titles[1], "Title A");
  EXPECT_EQ(dataset.titles[2], " Leading space");  // kept raw, as the reference does
}

TEST_F(DatasetTest, UserLineWithoutTab) {
  const std::string error = ErrorOf("u1\tA B C D\nu2 A B C D\n", kItems);
  EXPECT_TRUE(Contains(error, UsersPath() + ":2: no tab found")) << error;
  EXPECT_TRUE(Contains(error, "'user<TAB>item item ...'"));
}

TEST_F(DatasetTest, ItemLineWithoutTab) {
  const std::string error = ErrorOf(kUsers, "A\tTitle A\nB Title B\n");
  EXPECT_TRUE(Contains(error, ItemsPath() + ":2: no tab found")) << error;
}

TEST_F(DatasetTest, EmptyItemList) {
  const std::string error = ErrorOf("u1\tA B C D\nu2\t  \n", kItems);
  EXPECT_TRUE(Contains(error, UsersPath() + ":2: user 'u2' has an empty item list")) << error;
}

TEST_F(DatasetTest, EmptyId) {
  const std::string error = ErrorOf("\tA B C D\n", kItems);
  EXPECT_TRUE(Contains(error, UsersPath() + ":1: the id before the tab is empty")) << error;
}

TEST_F(DatasetTest, SequenceItemMissingFromItemsFile) {
  const std::string error = ErrorOf("u1\tA B C D\nu2\tA B00X C D\n", kItems);
  EXPECT_EQ(error, UsersPath() +
                       ":2: item 'B00X' is not in items.tsv; add it there or remove it from the "
                       "sequence");
}

TEST_F(DatasetTest, EmptyTitle) {
  for (const char* items : {"A\tTitle\nB\t\n", "A\tTitle\nB\t \t \n"}) {
    const std::string error = ErrorOf(kUsers, items);
    EXPECT_TRUE(Contains(error, ItemsPath() + ":2: item 'B' has an empty title")) << error;
  }
}

TEST_F(DatasetTest, InvalidUtf8NamesByteOffset) {
  std::string error = ErrorOf(kUsers, "A\tTitle\nB\tCaf\xC3 au lait\n");
  EXPECT_TRUE(Contains(error, ItemsPath() + ":2: invalid UTF-8 at byte offset 5")) << error;
  EXPECT_TRUE(Contains(error, "0xC3"));
  error = ErrorOf("u1\tA B C D\nu\xFF\tA B C D\n", kItems);
  EXPECT_TRUE(Contains(error, UsersPath() + ":2: invalid UTF-8 at byte offset 1")) << error;
  // Overlong encodings and surrogates are not UTF-8 either.
  EXPECT_TRUE(Contains(ErrorOf(kUsers, "A\t\xC0\xAF\n"), "invalid UTF-8 at byte offset 2"));
  EXPECT_TRUE(Contains(ErrorOf(kUsers, "A\t\xED\xA0\x80\n"), "invalid UTF-8 at byte offset 2"));
}

TEST_F(DatasetTest, ValidMultibyteUtf8IsAccepted) {
  Write("u1\tA B C D\n", "A\tCafé ☃ 中文 😀\nB\tB\nC\tC\nD\tD\n");
  EXPECT_EQ(Load().titles[1], "Café ☃ 中文 😀");
}

TEST_F(DatasetTest, DuplicateItemId) {
  const std::string error = ErrorOf(kUsers, "A\tTitle A\nB\tTitle B\nA\tAgain\n");
  EXPECT_TRUE(Contains(error, ItemsPath() + ":3: item 'A' is listed twice (first on line 1)"))
      << error;
}

TEST_F(DatasetTest, EmptyFiles) {
  EXPECT_EQ(ErrorOf("", kItems), UsersPath() +
                                     ": file is empty; it needs one 'user<TAB>item item ...' "
                                     "line per user");
  EXPECT_TRUE(Contains(ErrorOf(kUsers, "\n\n"), ItemsPath() + ": file is empty"));
}

TEST_F(DatasetTest, MissingFilesAndFolder) {
  WriteFile(dir_.path() / "items.tsv", kItems);
  EXPECT_TRUE(Contains(InputErrorOf([&] { Load(); }), UsersPath() + ": file not found"));
  fs::remove(dir_.path() / "items.tsv");
  WriteFile(dir_.path() / "users.tsv", kUsers);
  EXPECT_TRUE(Contains(InputErrorOf([&] { Load(); }), ItemsPath() + ": file not found"));
  const fs::path nowhere = dir_.path() / "nowhere";
  EXPECT_TRUE(Contains(InputErrorOf([&] { LoadDataset(nowhere); }),
                       nowhere.string() + ": dataset folder not found"));
}

TEST_F(DatasetTest, AllUsersTooShort) {
  const std::string error = ErrorOf("u1\tA B\nu2\tA B C\n", kItems);
  EXPECT_TRUE(Contains(error, "all 2 users have fewer than min_seq_len = 4 items")) << error;
}

TEST_F(DatasetTest, ImpossibleOptions) {
  Write(kUsers, kItems);
  EXPECT_THROW(Load({.min_seq_len = 2}), std::invalid_argument);
  EXPECT_THROW(Load({.max_seq_len = 0}), std::invalid_argument);
}

TEST_F(DatasetTest, AttachesJpgAndPngImages) {
  Write(kUsers, kItems);
  WriteFile(dir_.path() / "images" / "A.jpg", "x");
  WriteFile(dir_.path() / "images" / "B.png", "x");
  WriteFile(dir_.path() / "images" / "C.gif", "x");
  const Dataset dataset = Load();
  EXPECT_EQ(dataset.image_paths[1], dir_.path() / "images" / "A.jpg");
  EXPECT_EQ(dataset.image_paths[2], dir_.path() / "images" / "B.png");
  EXPECT_TRUE(dataset.image_paths[3].empty());
}

TEST_F(DatasetTest, RequireImagesNamesFirstMissingItemAndCount) {
  Write(kUsers, kItems);
  for (const char* id : {"A", "B", "D", "E"})
    WriteFile(dir_.path() / "images" / (std::string(id) + ".png"), "x");
  PreprocessOptions options = kSmallOptions;
  options.require_images = true;
  const std::string error = InputErrorOf([&] { Load(options); });
  EXPECT_TRUE(Contains(error, (dir_.path() / "images").string() +
                                  ": item 'C' has no image (looked for C.jpg and C.png); 2 of 6 "
                                  "items lack one"))
      << error;
  WriteFile(dir_.path() / "images" / "C.jpg", "x");
  WriteFile(dir_.path() / "images" / "F.jpg", "x");
  EXPECT_EQ(Load(options).image_paths[6], dir_.path() / "images" / "F.jpg");
}

TEST_F(DatasetTest, RequireImagesWithoutFolder) {
  Write(kUsers, kItems);
  PreprocessOptions options = kSmallOptions;
  options.require_images = true;
  const std::string error = InputErrorOf([&] { Load(options); });
  EXPECT_TRUE(Contains(error, (dir_.path() / "images").string() + ": folder not found")) << error;
}

TEST_F(DatasetTest, StatsSummariseKeptAndDroppedUsers) {
  Write(kUsers, kItems);
  const DatasetStats stats = ComputeStats(Load());
  EXPECT_EQ(stats.users, 2);
  EXPECT_EQ(stats.items, 6);
  EXPECT_EQ(stats.interactions, 11);
  EXPECT_DOUBLE_EQ(stats.average_length, 5.5);
  EXPECT_EQ(stats.min_length, 5);
  EXPECT_EQ(stats.max_length, 6);
  EXPECT_EQ(stats.dropped_users, 1);
  EXPECT_EQ(stats.dropped_interactions, 3);
}

// The "after preprocessing" row of IISAN.md §2.2, which the paper's dataset table uses.
TEST(DatasetScientificTest, MatchesReferenceCounts) {
  const fs::path dir = testing::SharedDataDir() / "amazon-scientific";
  if (!fs::exists(dir / "users.tsv")) {
    GTEST_SKIP() << "Amazon Scientific data not found at " << dir
                 << "; set IISAN_SHARED_DATA to the shared data folder to run this test";
  }
  const Dataset dataset = LoadDataset(dir);
  EXPECT_EQ(dataset.num_users(), 12076);
  EXPECT_EQ(dataset.num_items(), 20314);
  EXPECT_EQ(dataset.num_interactions(), 81711);
  EXPECT_EQ(dataset.dropped_users, 0);
  const DatasetStats stats = ComputeStats(dataset);
  EXPECT_NEAR(stats.average_length, 6.766, 5e-4);
  EXPECT_EQ(stats.min_length, 5);
  EXPECT_EQ(stats.max_length, 13);
  EXPECT_NEAR(std::accumulate(dataset.popularity.begin() + 1, dataset.popularity.end(), 0.0), 1.0,
              1e-9);
}

}  // namespace
}  // namespace iisan::data
