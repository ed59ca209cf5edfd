// LoadDataset under fuzzing (tests/fuzz_mutator.h): damaged users.tsv and items.tsv either load
// into a consistent dataset or raise an InputError that names the damaged file; nothing else
// escapes, nothing crashes or hangs.
#include "core/data/dataset.h"

#include <glog/logging.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "tests/core/data/test_files.h"
#include "tests/fuzz_mutator.h"

namespace iisan::data {
namespace {

using iisan::testing::FuzzMutator;
using iisan::testing::FuzzRequire;
using iisan::testing::RunFuzz;
using testing::TempDir;
using testing::WriteFile;

constexpr int64_t kIterations = 1500;

const std::vector<std::string> kItemsCorpus = {
    "A\tTitle A\nB\tTitle B\nC\tTitle C\nD\tTitle D\nE\tTitle E\nF\tTitle F\n",
    "\xEF\xBB\xBFI1\tA title with spaces\r\nI2\t\xC3\xA9t\xC3\xA9 \xE2\x82\xAC\r\nI3\tthird\r\nI4\tfourth\r\n",
    "x\ty\n\n  \nA\tTitle A\t(tab in the title)\nB\tB\nC\tC\nD\tD\n"};
const std::vector<std::string> kUsersCorpus = {
    "u1\tA B C D E\nu2\tF E D C B A\nu3\tA B C\n",
    "u1\tI1 I2 I3 I4\r\nu2\tI4\tI3  I2 I1\r\n",
    "u\tA B C D\n\nv\tD C B A A A\nw\tB\n"};
const std::string kSeparator = "\n=====\n";
const std::vector<std::string> kDictionary = {"\t", "\n", " ", "\r\n", "\xEF\xBB\xBF", "A", "I1", "u1", "\t\t",
                                              "\xC3", "\xED\xA0\x80"};

class DatasetFuzzTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // One LOG(INFO) line per loaded dataset would be thousands of lines.
    saved_level_ = FLAGS_minloglevel;
    FLAGS_minloglevel = google::GLOG_WARNING;
  }
  void TearDown() override { FLAGS_minloglevel = saved_level_; }

  // Loads dir with the given files; on success, checks what every consumer relies on.
  void LoadAndCheck(const std::string& users, const std::string& items) {
    WriteFile(dir_.path() / "users.tsv", users);
    WriteFile(dir_.path() / "items.tsv", items);
    PreprocessOptions options;
    options.min_seq_len = 3;
    options.max_seq_len = 2;
    const Dataset dataset = LoadDataset(dir_.path(), options);
    FuzzRequire(dataset.num_users() >= 1, "at least one user");
    FuzzRequire(dataset.titles.size() == dataset.item_ids.size(), "a title per item");
    FuzzRequire(dataset.popularity.size() == dataset.item_ids.size(), "a popularity per item");
    for (const auto& sequence : dataset.sequences) {
      FuzzRequire(sequence.size() >= 3 && sequence.size() <= 2 + 3, "sequences of min_seq_len to L + 3 items");
      for (const int32_t item : sequence) FuzzRequire(item >= 1 && item <= dataset.num_items(), "items in 1..N");
    }
    const double total = std::accumulate(dataset.popularity.begin() + 1, dataset.popularity.end(), 0.0);
    FuzzRequire(std::abs(total - 1.0) < 1e-9, "popularity sums to 1");
  }

  // The error must name one of the two files.
  std::string NamesAFile(const InputError& error) const {
    const std::string message = error.what();
    for (const char* file : {"users.tsv", "items.tsv"}) {
      if (error.path() == dir_.path() / file && message.find((dir_.path() / file).string()) == 0) return "";
    }
    return "the InputError does not name users.tsv or items.tsv: " + message;
  }

  TempDir dir_;
  int saved_level_ = 0;
};

TEST_F(DatasetFuzzTest, DamagedUsersFilesLoadOrNameTheFile) {
  FuzzMutator mutator(101, kUsersCorpus, kDictionary);
  const auto outcome = RunFuzz<InputError>(
      mutator, kIterations, [&](const std::string& users) { LoadAndCheck(users, kItemsCorpus[0] + kItemsCorpus[1]); },
      [&](const InputError& error) { return NamesAFile(error); });
  EXPECT_GT(outcome.parsed, 0);
  EXPECT_GT(outcome.refused, 0);
}

TEST_F(DatasetFuzzTest, DamagedItemsFilesLoadOrNameTheFile) {
  FuzzMutator mutator(102, kItemsCorpus, kDictionary);
  const auto outcome = RunFuzz<InputError>(
      mutator, kIterations, [&](const std::string& items) { LoadAndCheck(kUsersCorpus[0], items); },
      [&](const InputError& error) { return NamesAFile(error); });
  EXPECT_GT(outcome.parsed, 0);
  EXPECT_GT(outcome.refused, 0);
}

TEST_F(DatasetFuzzTest, BothFilesDamagedAtOnce) {
  // Both files travel in one input, split at a separator that the mutations may damage too.
  std::vector<std::string> corpus;
  for (const auto& users : kUsersCorpus) {
    for (const auto& items : kItemsCorpus) corpus.push_back(users + kSeparator + items);
  }
  FuzzMutator mutator(103, corpus, kDictionary);
  const auto outcome = RunFuzz<InputError>(
      mutator, kIterations,
      [&](const std::string& both) {
        const size_t split = both.find(kSeparator);
        LoadAndCheck(both.substr(0, split), split == std::string::npos ? "" : both.substr(split + kSeparator.size()));
      },
      [&](const InputError& error) { return NamesAFile(error); });
  EXPECT_GT(outcome.refused, 0);
}

}  // namespace
}  // namespace iisan::data
