// The interaction dataset as IISAN trains on it: users.tsv + items.tsv (+ images/) read, filtered,
// truncated and re-indexed exactly as the reference's read_behaviors does (IISAN.md §2.3), with
// the leave-one-out train / valid / test split and the train-list item popularity.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace iisan::data {

struct PreprocessOptions {
  // Users with fewer items are dropped. At least 3: train, valid and test need one item each.
  int min_seq_len = 5;
  // L: the longest model input. Each user keeps only their last max_seq_len + 3 items.
  int max_seq_len = 10;
  // Every kept item must have images/<item>.jpg or .png.
  bool require_images = false;
};

// One ranking example. The spans point into the Dataset that made them.
struct SplitExample {
  std::span<const int32_t> input;  // the last <= L items before the target, oldest first
  int32_t target = 0;
  std::span<const int32_t> excluded;  // history masked out of the ranking
};

struct Dataset {
  // Indexed by item 1..N in items-file order; index 0 is padding ("" / empty path).
  std::vector<std::string> item_ids;
  std::vector<std::string> titles;
  std::vector<std::filesystem::path> image_paths;  // empty where the item has no image
  // Indexed by user 0..U-1 in users-file order.
  std::vector<std::string> user_ids;
  std::vector<std::vector<int32_t>> sequences;  // item indices, truncated, oldest first
  // Share of each item among all train-list occurrences (sums to 1 over 1..N); index 0 is 1 so
  // that its log is 0 in the loss's logQ correction. Items seen only as valid/test targets get 0.
  std::vector<double> popularity;
  int max_seq_len = 10;              // L of the options it was built with; the splits use it
  int64_t dropped_users = 0;         // users shorter than min_seq_len
  int64_t dropped_interactions = 0;  // items of those users

  int64_t num_items() const { return static_cast<int64_t>(item_ids.size()) - 1; }
  int64_t num_users() const { return static_cast<int64_t>(sequences.size()); }
  int64_t num_interactions() const;  // sum of kept sequence lengths

  // seq[:-2], the user's single training sequence.
  std::span<const int32_t> train_sequence(int64_t user) const;
  // Target seq[-2]; input: the last <= L items of seq[:-2]; excluded: seq[:-2].
  SplitExample valid_example(int64_t user) const;
  // Target seq[-1]; input: the last <= L items of seq[:-1]; excluded: seq[:-1].
  SplitExample test_example(int64_t user) const;
};

// Reads dir/users.tsv, dir/items.tsv and, if present, dir/images/. Throws InputError naming the
// file, line and fix for any malformed input, and std::invalid_argument for impossible options.
Dataset LoadDataset(const std::filesystem::path& dir, const PreprocessOptions& options = {});

struct DatasetStats {
  int64_t users = 0;
  int64_t items = 0;
  int64_t interactions = 0;
  double average_length = 0;
  int64_t min_length = 0;
  int64_t max_length = 0;
  int64_t dropped_users = 0;
  int64_t dropped_interactions = 0;
};

DatasetStats ComputeStats(const Dataset& dataset);

}  // namespace iisan::data
