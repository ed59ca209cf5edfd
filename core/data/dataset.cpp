// Reads and preprocesses the interaction dataset (IISAN.md §2.3). Both files are read whole and
// parsed as string_views into that buffer, so the ~20k-line Amazon files load in milliseconds.
#include "core/data/dataset.h"

#include <glog/logging.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <unordered_set>

#include "core/data/input_error.h"
#include "core/data/text_file.h"

namespace iisan::data {
namespace {

namespace fs = std::filesystem;

constexpr char kUsersFile[] = "users.tsv";
constexpr char kItemsFile[] = "items.tsv";
constexpr char kImagesFolder[] = "images";
constexpr const char* kImageExtensions[] = {".jpg", ".png"};
// Reference truncation: the last L + 3 items give L inputs plus the train, valid and test targets.
constexpr int kExtraItemsKept = 3;

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view TrimRight(std::string_view text) {
  while (!text.empty() && IsBlank(text.back())) text.remove_suffix(1);
  return text;
}

std::string_view Trim(std::string_view text) {
  text = TrimRight(text);
  while (!text.empty() && IsBlank(text.front())) text.remove_prefix(1);
  return text;
}

struct KeyValue {
  std::string_view key;
  std::string_view value;
};

// Splits "key<TAB>value"; `layout` describes the expected line in the error message.
KeyValue SplitAtTab(const TextLines& lines, std::string_view line, std::string_view layout) {
  const size_t tab = line.find('\t');
  if (tab == std::string_view::npos) {
    throw InputError(
        lines.path(), lines.line_number(),
        "no tab found; each line must read '" + std::string(layout) + "' with a tab after the id");
  }
  const std::string_view key = line.substr(0, tab);
  if (key.empty() || key.find(' ') != std::string_view::npos) {
    throw InputError(lines.path(), lines.line_number(),
                     "the id before the tab is empty or contains a space ('" + std::string(key) +
                         "'); ids are single words");
  }
  return {key, line.substr(tab + 1)};
}

struct ItemsFile {
  // Owns the text that ids and titles point into; on the heap so that moving keeps it in place.
  std::unique_ptr<const std::string> bytes;
  std::vector<std::string_view> ids;
  std::vector<std::string_view> titles;
  std::unordered_map<std::string_view, int32_t> position;  // id -> index into ids
};

ItemsFile ReadItems(const fs::path& path) {
  ItemsFile items;
  items.bytes = std::make_unique<const std::string>(ReadFile(path));
  std::vector<int64_t> line_of;  // for naming the first occurrence of a duplicate
  TextLines lines(path, *items.bytes);
  std::string_view line;
  while (lines.Next(&line)) {
    if (Trim(line).empty()) continue;
    const auto [id, raw_title] = SplitAtTab(lines, line, "item<TAB>title");
    const std::string_view title = TrimRight(raw_title);
    if (Trim(title).empty()) {
      throw InputError(
          path, lines.line_number(),
          "item '" + std::string(id) + "' has an empty title; give it a title or remove the line");
    }
    const auto [it, inserted] = items.position.emplace(id, static_cast<int32_t>(items.ids.size()));
    if (!inserted) {
      throw InputError(path, lines.line_number(),
                       "item '" + std::string(id) + "' is listed twice (first on line " +
                           std::to_string(line_of[it->second]) + "); keep one of the two lines");
    }
    items.ids.push_back(id);
    items.titles.push_back(title);
    line_of.push_back(lines.line_number());
  }
  if (items.ids.empty()) {
    throw InputError(path, 0, "file is empty; it needs one 'item<TAB>title' line per item");
  }
  return items;
}

// Sequences hold items-file positions until the final re-indexing.
struct UsersFile {
  std::vector<std::string> user_ids;
  std::vector<std::vector<int32_t>> sequences;
  int64_t dropped_users = 0;
  int64_t dropped_interactions = 0;
};

UsersFile ReadUsers(const fs::path& path, const ItemsFile& items, const fs::path& items_path,
                    const PreprocessOptions& options) {
  const std::string bytes = ReadFile(path);
  const size_t kept_length = static_cast<size_t>(options.max_seq_len) + kExtraItemsKept;
  UsersFile users;
  std::vector<int32_t> sequence;
  TextLines lines(path, bytes);
  std::string_view line;
  int64_t lines_with_users = 0;
  while (lines.Next(&line)) {
    if (Trim(line).empty()) continue;
    ++lines_with_users;
    const auto [user, item_list] = SplitAtTab(lines, line, "user<TAB>item item ...");
    sequence.clear();
    std::string_view rest = Trim(item_list);
    while (!rest.empty()) {
      const size_t end = std::min(rest.find(' '), rest.find('\t'));
      const std::string_view item = rest.substr(0, end);
      rest = Trim(end == std::string_view::npos ? std::string_view() : rest.substr(end));
      const auto found = items.position.find(item);
      if (found == items.position.end()) {
        throw InputError(path, lines.line_number(),
                         "item '" + std::string(item) + "' is not in " +
                             items_path.filename().string() +
                             "; add it there or remove it from the sequence");
      }
      sequence.push_back(found->second);
    }
    if (sequence.empty()) {
      throw InputError(path, lines.line_number(),
                       "user '" + std::string(user) +
                           "' has an empty item list; list their items or remove the line");
    }
    if (sequence.size() < static_cast<size_t>(options.min_seq_len)) {
      ++users.dropped_users;
      users.dropped_interactions += static_cast<int64_t>(sequence.size());
      continue;
    }
    const size_t first = sequence.size() - std::min(sequence.size(), kept_length);
    users.user_ids.emplace_back(user);
    users.sequences.emplace_back(sequence.begin() + static_cast<ptrdiff_t>(first), sequence.end());
  }
  if (lines_with_users == 0) {
    throw InputError(path, 0, "file is empty; it needs one 'user<TAB>item item ...' line per user");
  }
  if (users.sequences.empty()) {
    throw InputError(path, 0,
                     "all " + std::to_string(users.dropped_users) + " users have fewer than " +
                         "min_seq_len = " + std::to_string(options.min_seq_len) +
                         " items; lower min_seq_len or add interactions");
  }
  return users;
}

// File names in the images folder, listed once instead of probing two paths per item.
std::unordered_set<std::string> ListImages(const fs::path& folder) {
  std::unordered_set<std::string> names;
  std::error_code error;
  for (fs::directory_iterator it(folder, error), end; !error && it != end; it.increment(error)) {
    names.insert(it->path().filename().string());
  }
  if (error) throw InputError(folder, 0, "cannot list the folder: " + error.message());
  return names;
}

void AttachImages(const fs::path& dir, bool require_images, Dataset* dataset) {
  const fs::path folder = dir / kImagesFolder;
  dataset->image_paths.assign(dataset->item_ids.size(), fs::path());
  if (!fs::is_directory(folder)) {
    if (require_images) {
      throw InputError(folder, 0,
                       "folder not found but require_images is set; add <item>.jpg or <item>.png "
                       "for every item there, or turn require_images off");
    }
    return;
  }
  const auto names = ListImages(folder);
  int64_t missing = 0;
  std::string first_missing;
  for (size_t i = 1; i < dataset->item_ids.size(); ++i) {
    const std::string& id = dataset->item_ids[i];
    for (const char* extension : kImageExtensions) {
      if (names.contains(id + extension)) {
        dataset->image_paths[i] = folder / (id + extension);
        break;
      }
    }
    if (dataset->image_paths[i].empty() && missing++ == 0) first_missing = id;
  }
  if (require_images && missing > 0) {
    throw InputError(folder, 0,
                     "item '" + first_missing + "' has no image (looked for " + first_missing +
                         ".jpg and " + first_missing + ".png); " + std::to_string(missing) +
                         " of " + std::to_string(dataset->num_items()) +
                         " items lack one; add them or turn require_images off");
  }
}

// Counts each item's occurrences in the train lists, normalised to sum to 1 over items 1..N.
std::vector<double> TrainPopularity(const Dataset& dataset) {
  std::vector<double> popularity(dataset.item_ids.size(), 0.0);
  int64_t total = 0;
  for (int64_t user = 0; user < dataset.num_users(); ++user) {
    for (const int32_t item : dataset.train_sequence(user)) {
      popularity[item] += 1.0;
      ++total;
    }
  }
  for (double& share : popularity) share /= static_cast<double>(total);
  popularity[0] = 1.0;
  return popularity;
}

// The example whose target sits at `target_index`: everything before it is history.
SplitExample ExampleAt(std::span<const int32_t> sequence, size_t target_index, int max_seq_len) {
  const auto history = sequence.first(target_index);
  const size_t input_length = std::min(history.size(), static_cast<size_t>(max_seq_len));
  return {history.last(input_length), sequence[target_index], history};
}

void CheckOptions(const PreprocessOptions& options) {
  if (options.min_seq_len < 3) {
    throw std::invalid_argument(
        "min_seq_len must be at least 3 (train, valid and test each need "
        "an item); got " +
        std::to_string(options.min_seq_len));
  }
  if (options.max_seq_len < 1) {
    throw std::invalid_argument("max_seq_len must be at least 1; got " +
                                std::to_string(options.max_seq_len));
  }
}

}  // namespace

int64_t Dataset::num_interactions() const {
  int64_t total = 0;
  for (const auto& sequence : sequences) total += static_cast<int64_t>(sequence.size());
  return total;
}

std::span<const int32_t> Dataset::train_sequence(int64_t user) const {
  const auto& sequence = sequences.at(static_cast<size_t>(user));
  return std::span<const int32_t>(sequence).first(sequence.size() - 2);
}

SplitExample Dataset::valid_example(int64_t user) const {
  const auto& sequence = sequences.at(static_cast<size_t>(user));
  return ExampleAt(sequence, sequence.size() - 2, max_seq_len);
}

SplitExample Dataset::test_example(int64_t user) const {
  const auto& sequence = sequences.at(static_cast<size_t>(user));
  return ExampleAt(sequence, sequence.size() - 1, max_seq_len);
}

Dataset LoadDataset(const fs::path& dir, const PreprocessOptions& options) {
  CheckOptions(options);
  if (!fs::is_directory(dir)) {
    throw InputError(dir, 0, "dataset folder not found; it must hold users.tsv and items.tsv");
  }
  const fs::path items_path = dir / kItemsFile;
  const ItemsFile items = ReadItems(items_path);
  UsersFile users = ReadUsers(dir / kUsersFile, items, items_path, options);

  // Keep only items that occur in kept sequences, numbered 1..N in items-file order.
  std::vector<int32_t> new_index(items.ids.size(), 0);
  for (const auto& sequence : users.sequences) {
    for (const int32_t position : sequence) new_index[position] = 1;
  }
  Dataset dataset;
  dataset.item_ids.emplace_back();
  dataset.titles.emplace_back();
  for (size_t position = 0; position < items.ids.size(); ++position) {
    if (new_index[position] == 0) continue;
    new_index[position] = static_cast<int32_t>(dataset.item_ids.size());
    dataset.item_ids.emplace_back(items.ids[position]);
    dataset.titles.emplace_back(items.titles[position]);
  }
  for (auto& sequence : users.sequences) {
    for (int32_t& item : sequence) item = new_index[item];
  }
  dataset.user_ids = std::move(users.user_ids);
  dataset.sequences = std::move(users.sequences);
  dataset.max_seq_len = options.max_seq_len;
  dataset.dropped_users = users.dropped_users;
  dataset.dropped_interactions = users.dropped_interactions;
  AttachImages(dir, options.require_images, &dataset);
  dataset.popularity = TrainPopularity(dataset);

  if (dataset.dropped_users > 0) {
    LOG(INFO) << "dataset " << dir.string() << ": dropped " << dataset.dropped_users
              << " users with fewer than " << options.min_seq_len << " items ("
              << dataset.dropped_interactions << " interactions)";
  }
  LOG(INFO) << "dataset " << dir.string() << ": " << dataset.num_users() << " users, "
            << dataset.num_items() << " items, " << dataset.num_interactions() << " interactions";
  return dataset;
}

DatasetStats ComputeStats(const Dataset& dataset) {
  DatasetStats stats;
  stats.users = dataset.num_users();
  stats.items = dataset.num_items();
  stats.interactions = dataset.num_interactions();
  stats.dropped_users = dataset.dropped_users;
  stats.dropped_interactions = dataset.dropped_interactions;
  if (stats.users == 0) return stats;
  stats.average_length = static_cast<double>(stats.interactions) / static_cast<double>(stats.users);
  const auto [shortest, longest] =
      std::minmax_element(dataset.sequences.begin(), dataset.sequences.end(),
                          [](const auto& a, const auto& b) { return a.size() < b.size(); });
  stats.min_length = static_cast<int64_t>(shortest->size());
  stats.max_length = static_cast<int64_t>(longest->size());
  return stats;
}

}  // namespace iisan::data
