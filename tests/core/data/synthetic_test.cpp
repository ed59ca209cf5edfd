// WriteSyntheticDataset: same seed gives the same bytes, another seed other data; LoadDataset
// reads the output with images required; the folder is replaced only when asked and never left
// half-written; and the planted structure (category hue in images, category words in titles,
// successor transitions) is there to be learnt.
#include "core/data/synthetic.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>

#include "core/data/dataset.h"
#include "core/data/image.h"
#include "tests/core/data/test_files.h"

namespace iisan::data {
namespace {

namespace fs = std::filesystem;
using testing::Contains;
using testing::InputErrorOf;
using testing::ReadBytes;
using testing::TempDir;
using testing::WriteFile;

constexpr SynthOptions kSmall{
    .num_users = 300, .num_items = 90, .num_categories = 6, .image_size = 12, .seed = 11};

// Every file under dir, keyed by relative path.
std::map<std::string, std::string> Snapshot(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) {
      files[fs::relative(entry.path(), dir).string()] = ReadBytes(entry.path());
    }
  }
  return files;
}

// Category recovered from an image: averaging same-hue colours keeps the hue, and the generator
// puts category c's hue within (c + 0.5 +- 0.15) / C.
int CategoryFromImage(const Image& image, int num_categories) {
  double sum[3] = {0, 0, 0};
  for (size_t i = 0; i < image.rgb.size(); ++i) sum[i % 3] += image.rgb[i];
  const double r = sum[0], g = sum[1], b = sum[2];
  const double max = std::max({r, g, b}), min = std::min({r, g, b});
  double hue;  // in [0, 6)
  if (max == r) {
    hue = std::fmod((g - b) / (max - min) + 6.0, 6.0);
  } else if (max == g) {
    hue = (b - r) / (max - min) + 2.0;
  } else {
    hue = (r - g) / (max - min) + 4.0;
  }
  return static_cast<int>(hue / 6.0 * num_categories);
}

TEST(SyntheticTest, SameSeedSameBytesOtherSeedOtherData) {
  TempDir dir;
  WriteSyntheticDataset(dir.path() / "a", kSmall);
  WriteSyntheticDataset(dir.path() / "b", kSmall);
  SynthOptions other = kSmall;
  other.seed = 12;
  WriteSyntheticDataset(dir.path() / "c", other);
  const auto a = Snapshot(dir.path() / "a");
  EXPECT_EQ(a.size(), 2u + 90u);
  EXPECT_TRUE(a == Snapshot(dir.path() / "b"));
  const auto c = Snapshot(dir.path() / "c");
  EXPECT_NE(a.at("users.tsv"), c.at("users.tsv"));
  EXPECT_NE(a.at("items.tsv"), c.at("items.tsv"));
}

TEST(SyntheticTest, ReaderReadsWhatItWrites) {
  TempDir dir;
  WriteSyntheticDataset(dir.path() / "synth", kSmall);
  PreprocessOptions options;
  options.require_images = true;
  const Dataset dataset = LoadDataset(dir.path() / "synth", options);
  EXPECT_EQ(dataset.num_users(), 300);
  EXPECT_EQ(dataset.dropped_users, 0);
  EXPECT_GT(dataset.num_items(), 60);
  EXPECT_EQ(dataset.user_ids[123], "U000123");
  for (size_t i = 1; i < dataset.item_ids.size(); ++i) {
    const std::string& id = dataset.item_ids[i];
    ASSERT_EQ(id.size(), 10u);
    EXPECT_EQ(id[0], 'S');
    EXPECT_TRUE(std::all_of(id.begin(), id.end(), [](char c) { return std::isalnum(c) != 0; }));
    EXPECT_EQ(dataset.image_paths[i].extension(), ".png");
  }
  const Image image = DecodeImage(dataset.image_paths[1]);
  EXPECT_EQ(image.width, 12);
  EXPECT_EQ(image.height, 12);

  // Raw sequence lengths are 5..20 (read with room for all 20).
  options.max_seq_len = 17;
  const DatasetStats stats = ComputeStats(LoadDataset(dir.path() / "synth", options));
  EXPECT_GE(stats.min_length, 5);
  EXPECT_LE(stats.max_length, 20);
  EXPECT_GT(stats.max_length, stats.min_length);
}

TEST(SyntheticTest, PlantedStructureIsLearnable) {
  TempDir dir;
  WriteSyntheticDataset(dir.path() / "synth", kSmall);
  const Dataset dataset = LoadDataset(dir.path() / "synth", {.max_seq_len = 17});
  std::vector<int> category(dataset.item_ids.size());
  std::vector<int> items_per_category(6);
  for (size_t i = 1; i < category.size(); ++i) {
    category[i] = CategoryFromImage(DecodeImage(dataset.image_paths[i]), 6);
    ++items_per_category[category[i]];
  }
  for (const int count : items_per_category) EXPECT_GT(count, 8);

  // Each title has two words that no title of another category uses.
  std::map<std::string, std::set<int>> categories_of_word;
  std::vector<std::vector<std::string>> words(category.size());
  for (size_t i = 1; i < category.size(); ++i) {
    std::istringstream title(dataset.titles[i]);
    for (std::string word; title >> word;) {
      words[i].push_back(word);
      categories_of_word[word].insert(category[i]);
    }
  }
  for (size_t i = 1; i < category.size(); ++i) {
    const auto own = std::count_if(words[i].begin(), words[i].end(), [&](const std::string& w) {
      return categories_of_word[w].size() == 1;
    });
    EXPECT_GE(own, 2) << dataset.titles[i];
  }

  // Transitions follow one successor per category about 80% of the time.
  std::vector<std::vector<int>> transitions(6, std::vector<int>(6));
  for (const auto& sequence : dataset.sequences) {
    for (size_t k = 1; k < sequence.size(); ++k) {
      ++transitions[category[sequence[k - 1]]][category[sequence[k]]];
    }
  }
  for (const auto& row : transitions) {
    const int total = std::accumulate(row.begin(), row.end(), 0);
    const int top = *std::max_element(row.begin(), row.end());
    EXPECT_GT(top, 0.7 * total);
    EXPECT_LT(top, 0.92 * total);
  }

  // Every title names one style; consecutive items keep it 0.8 + 0.2 / 4 = 85% of the time.
  const std::vector<std::string> styles = {"Round", "Square", "Striped", "Dotted"};
  std::vector<int> style(category.size(), -1);
  for (size_t i = 1; i < category.size(); ++i) {
    for (size_t s = 0; s < styles.size(); ++s) {
      if (std::count(words[i].begin(), words[i].end(), styles[s]) == 1) {
        EXPECT_EQ(style[i], -1) << dataset.titles[i];
        style[i] = static_cast<int>(s);
      }
    }
    EXPECT_NE(style[i], -1) << dataset.titles[i];
  }
  int kept = 0, steps = 0;
  for (const auto& sequence : dataset.sequences) {
    for (size_t k = 1; k < sequence.size(); ++k, ++steps) kept += style[sequence[k - 1]] == style[sequence[k]];
  }
  EXPECT_GT(kept, 0.78 * steps);
  EXPECT_LT(kept, 0.92 * steps);
}

TEST(SyntheticTest, RefusesNonEmptyFolderUnlessOverwrite) {
  TempDir dir;
  const fs::path out = dir.path() / "synth";
  WriteFile(out / "notes.txt", "mine");
  const std::string error = InputErrorOf([&] { WriteSyntheticDataset(out, kSmall); });
  EXPECT_TRUE(Contains(error, out.string() + ": folder is not empty")) << error;
  EXPECT_EQ(ReadBytes(out / "notes.txt"), "mine");

  SynthOptions options = kSmall;
  options.overwrite = true;
  WriteSyntheticDataset(out, options);
  EXPECT_FALSE(fs::exists(out / "notes.txt"));
  EXPECT_TRUE(fs::exists(out / "users.tsv"));
  // Only the dataset is left beside it: no staging or replaced folders.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(SyntheticTest, EmptyExistingFolderIsFilled) {
  TempDir dir;
  fs::create_directories(dir.path() / "synth");
  WriteSyntheticDataset(dir.path() / "synth/", kSmall);
  EXPECT_TRUE(fs::exists(dir.path() / "synth" / "items.tsv"));
}

TEST(SyntheticTest, FailedWriteLeavesNothingBehind) {
  TempDir dir;
  // A file where the parent folder should be makes every write fail.
  WriteFile(dir.path() / "blocker", "x");
  const fs::path out = dir.path() / "blocker" / "synth";
  const std::string error = InputErrorOf([&] { WriteSyntheticDataset(out, kSmall); });
  EXPECT_TRUE(Contains(error, out.string() + ": cannot write the dataset")) << error;
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(SyntheticTest, RejectsImpossibleOptions) {
  TempDir dir;
  for (SynthOptions options : {SynthOptions{.num_categories = 17}, SynthOptions{.num_items = 3},
                               SynthOptions{.min_seq_len = 2}, SynthOptions{.image_size = 1}}) {
    EXPECT_THROW(WriteSyntheticDataset(dir.path() / "synth", options), std::invalid_argument);
  }
  EXPECT_FALSE(fs::exists(dir.path() / "synth"));
}

}  // namespace
}  // namespace iisan::data
