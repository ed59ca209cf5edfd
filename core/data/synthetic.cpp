// Synthetic dataset generator. Only integer arithmetic, IEEE basic operations and our own PRNG
// feed the output (no <random> distributions, no libm transcendentals), so a seed gives the same
// bytes with every compiler and standard library.
#include "core/data/synthetic.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <atomic>
#include <mutex>
#include <exception>
#include <unordered_set>
#include <vector>

#include "core/data/atomic_file.h"
#include "core/data/dataset.h"
#include "core/data/image.h"
#include "core/data/input_error.h"
#include "core/data/progress.h"
#include "core/data/text_file.h"

namespace iisan::data {
namespace {

namespace fs = std::filesystem;

// Six words per category, each a whole token of BERT's uncased vocabulary, so that a text
// encoder sees the category signal directly.
constexpr std::array<std::array<const char*, 6>, 16> kCategoryWords = {{
    {"microscope", "lens", "telescope", "prism", "mirror", "optical"},
    {"circuit", "voltage", "amplifier", "sensor", "antenna", "transmitter"},
    {"chemical", "acid", "solvent", "bottle", "tube", "laboratory"},
    {"gauge", "ruler", "meter", "scale", "dial", "timer"},
    {"hammer", "drill", "saw", "blade", "knife", "shovel"},
    {"bolt", "screw", "nut", "nail", "anchor", "hook"},
    {"gloves", "helmet", "mask", "vest", "boots", "apron"},
    {"printer", "plate", "cartridge", "ink", "paper", "print"},
    {"pipe", "valve", "hose", "pump", "fitting", "drain"},
    {"wire", "cable", "switch", "plug", "socket", "battery"},
    {"specimen", "culture", "sample", "slide", "tissue", "bacteria"},
    {"lamp", "bulb", "lantern", "torch", "flashlight", "candle"},
    {"motor", "gear", "bearing", "belt", "shaft", "engine"},
    {"tape", "glue", "coating", "paint", "rubber", "foam"},
    {"box", "bin", "rack", "shelf", "cabinet", "drawer"},
    {"magnet", "spring", "pendulum", "lever", "compass", "coil"},
}};
// Shared by all categories: noise a model must learn to ignore.
constexpr const char* kFillerWords[] = {
    "professional", "digital", "portable", "heavy", "duty", "premium", "standard", "compact",
    "industrial",   "kit",     "set",      "pack",  "new",  "series",  "black",    "silver",
    "steel",        "plastic", "small",    "large", "pro",  "ultra",   "mini"};
// One word per style (a second latent attribute, shared across categories), also whole tokens.
constexpr std::array<const char*, 4> kStyleWords = {"round", "square", "striped", "dotted"};
constexpr const char* kBrands[] = {"Apex",  "Summit", "Vertex",  "Nova",  "Atlas",  "Orion",
                                   "Delta", "Vector", "Pioneer", "Titan", "Zenith", "Falcon"};
constexpr std::string_view kIdAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
constexpr std::string_view kUppercase = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
constexpr int kItemIdLength = 9;  // after the leading 'S', like a 10-character ASIN
enum Pattern { kHorizontalStripes, kVerticalStripes, kChecks, kDots, kPatternCount };
constexpr int kPixelNoise = 16;   // per-channel uniform noise in [-16, 16]

// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and fully specified.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); the modulo bias is below 2^-40 for the sizes used here.
  int Below(int n) { return static_cast<int>(Next() % static_cast<uint64_t>(n)); }
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

  template <typename T>
  void Shuffle(std::vector<T>* values) {
    for (size_t i = values->size(); i > 1; --i) {
      std::swap((*values)[i - 1], (*values)[static_cast<size_t>(Below(static_cast<int>(i)))]);
    }
  }

 private:
  uint64_t state_;
};

struct Item {
  std::string id;
  int category = 0;
  int style = 0;
  std::string title;
  uint64_t image_seed = 0;
};

std::string Capitalized(std::string_view word) {
  std::string out(word);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 32);
  return out;
}

std::string MakeItemId(SplitMix64& rng, std::unordered_set<std::string>* taken) {
  while (true) {
    std::string id = "S";
    for (int i = 0; i < kItemIdLength; ++i) {
      id += kIdAlphabet[static_cast<size_t>(rng.Below(static_cast<int>(kIdAlphabet.size())))];
    }
    if (taken->insert(id).second) return id;
  }
}

// "Brand" + two category words, the style word and two or three fillers in random order + a
// model number.
std::string MakeTitle(int category, int style, SplitMix64& rng) {
  std::vector<std::string> words;
  const auto& own = kCategoryWords[static_cast<size_t>(category)];
  const int first = rng.Below(static_cast<int>(own.size()));
  const int second =
      (first + 1 + rng.Below(static_cast<int>(own.size()) - 1)) % static_cast<int>(own.size());
  words.push_back(own[static_cast<size_t>(first)]);
  words.push_back(own[static_cast<size_t>(second)]);
  words.push_back(kStyleWords[static_cast<size_t>(style)]);
  const int fillers = 2 + rng.Below(2);
  for (int i = 0; i < fillers; ++i) {
    words.push_back(kFillerWords[rng.Below(static_cast<int>(std::size(kFillerWords)))]);
  }
  rng.Shuffle(&words);
  std::string title = kBrands[rng.Below(static_cast<int>(std::size(kBrands)))];
  for (const auto& word : words) title += " " + Capitalized(word);
  char model[32];
  std::snprintf(model, sizeof(model), " - %c%c-%d", kUppercase[static_cast<size_t>(rng.Below(26))],
                kUppercase[static_cast<size_t>(rng.Below(26))], 100 + rng.Below(9900));
  return title + model;
}

std::array<int, 3> HsvToRgb(double hue, double saturation, double value) {
  const double sector = (hue - std::floor(hue)) * 6.0;
  const int index = static_cast<int>(sector) % 6;
  const double f = sector - static_cast<int>(sector);
  const double p = value * (1.0 - saturation);
  const double q = value * (1.0 - saturation * f);
  const double t = value * (1.0 - saturation * (1.0 - f));
  const double rgb[6][3] = {{value, t, p}, {q, value, p}, {p, value, t},
                            {p, q, value}, {t, p, value}, {value, p, q}};
  return {static_cast<int>(rgb[index][0] * 255.0 + 0.5),
          static_cast<int>(rgb[index][1] * 255.0 + 0.5),
          static_cast<int>(rgb[index][2] * 255.0 + 0.5)};
}

// The category fixes the hue and the style the pattern; each item jitters hue, brightness and
// phase and adds pixel noise, so images are alike within a group but never identical.
Image MakeImage(int category, int style, int num_categories, int size, uint64_t seed) {
  SplitMix64 rng(seed);
  const double hue = (category + 0.5 + 0.3 * (rng.Uniform() - 0.5)) / num_categories;
  const double brightness = rng.Uniform();
  const auto foreground = HsvToRgb(hue, 0.8, 0.95 - 0.2 * brightness);
  const auto background = HsvToRgb(hue, 0.45, 0.3 + 0.15 * brightness);
  const auto pattern = static_cast<Pattern>(style % kPatternCount);
  const int period = std::max(2, size * 6 / 32);
  const int half = std::max(1, period / 2);
  const int phase_x = rng.Below(period), phase_y = rng.Below(period);

  Image image{size, size, std::vector<uint8_t>(static_cast<size_t>(size) * size * 3)};
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      const int u = (x + phase_x) % period, v = (y + phase_y) % period;
      bool on = false;
      switch (pattern) {
        case kHorizontalStripes:
          on = v < half;
          break;
        case kVerticalStripes:
          on = u < half;
          break;
        case kChecks:
          on = ((x + phase_x) / half + (y + phase_y) / half) % 2 == 0;
          break;
        default:  // kDots: a disc of radius period / 3 per cell
          on = 9 * ((u - half) * (u - half) + (v - half) * (v - half)) <= period * period;
      }
      const auto& color = on ? foreground : background;
      for (int c = 0; c < 3; ++c) {
        const int noisy = color[c] + rng.Below(2 * kPixelNoise + 1) - kPixelNoise;
        image.rgb[(static_cast<size_t>(y) * size + x) * 3 + c] =
            static_cast<uint8_t>(std::clamp(noisy, 0, 255));
      }
    }
  }
  return image;
}

std::vector<Item> MakeItems(const SynthOptions& options, SplitMix64& rng) {
  // A shuffled round-robin keeps categories equally sized but scattered over the file.
  // Items go round-robin over (category, style) groups, so all groups are equally sized.
  const int groups = options.num_categories * options.num_styles;
  std::vector<int> categories(static_cast<size_t>(options.num_items));
  for (int i = 0; i < options.num_items; ++i) categories[i] = i % groups;
  rng.Shuffle(&categories);
  std::unordered_set<std::string> taken;
  std::vector<Item> items(categories.size());
  for (size_t i = 0; i < items.size(); ++i) {
    items[i].id = MakeItemId(rng, &taken);
    items[i].category = categories[i] % options.num_categories;
    items[i].style = categories[i] / options.num_categories;
    items[i].title = MakeTitle(items[i].category, items[i].style, rng);
    items[i].image_seed = rng.Next();
  }
  return items;
}

// Each category's successor: the next one along a random cycle through all categories.
std::vector<int> MakeSuccessors(int num_categories, SplitMix64& rng) {
  std::vector<int> cycle(static_cast<size_t>(num_categories));
  for (int c = 0; c < num_categories; ++c) cycle[c] = c;
  rng.Shuffle(&cycle);
  std::vector<int> successor(cycle.size());
  for (size_t k = 0; k < cycle.size(); ++k) successor[cycle[k]] = cycle[(k + 1) % cycle.size()];
  return successor;
}

// Items of one (category, style) group are equally likely: popularity carries no signal beyond
// what the transitions put there, while content plus transitions narrows the next item down to
// one group.
class GroupSampler {
 public:
  GroupSampler(const std::vector<Item>& items, const SynthOptions& options)
      : num_categories_(options.num_categories),
        members_(static_cast<size_t>(options.num_categories * options.num_styles)) {
    for (size_t i = 0; i < items.size(); ++i) {
      members_[static_cast<size_t>(Group(items[i].category, items[i].style))].push_back(static_cast<int>(i));
    }
  }

  int Sample(int category, int style, SplitMix64& rng) const {
    const auto& members = members_[static_cast<size_t>(Group(category, style))];
    return members[static_cast<size_t>(rng.Below(static_cast<int>(members.size())))];
  }

 private:
  int Group(int category, int style) const { return style * num_categories_ + category; }
  int num_categories_;
  std::vector<std::vector<int>> members_;
};

std::string MakeUsersFile(const SynthOptions& options, const std::vector<Item>& items,
                          SplitMix64& rng) {
  const std::vector<int> successor = MakeSuccessors(options.num_categories, rng);
  const GroupSampler sampler(items, options);
  const int span = options.max_seq_len - options.min_seq_len + 1;
  std::string text;
  for (int user = 0; user < options.num_users; ++user) {
    // Squaring a uniform favours short sequences, as in the Amazon data.
    const double x = rng.Uniform();
    const int length = options.min_seq_len + std::min(span - 1, static_cast<int>(span * x * x));
    char user_id[24];
    std::snprintf(user_id, sizeof(user_id), "U%06d\t", user);
    text += user_id;
    int category = rng.Below(options.num_categories);
    int style = rng.Below(options.num_styles);
    for (int k = 0; k < length; ++k) {
      if (k > 0) {
        category = rng.Uniform() < options.successor_probability
                       ? successor[static_cast<size_t>(category)]
                       : rng.Below(options.num_categories);
        if (rng.Uniform() >= options.style_persistence) style = rng.Below(options.num_styles);
        text += ' ';
      }
      text += items[static_cast<size_t>(sampler.Sample(category, style, rng))].id;
    }
    text += '\n';
  }
  return text;
}

void WriteTextFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  if (!out.write(text.data(), static_cast<std::streamsize>(text.size())) || !out.flush()) {
    throw InputError(path, 0, "cannot write the file; check free space and permissions");
  }
}

void WriteDatasetFiles(const fs::path& dir, const SynthOptions& options) {
  SplitMix64 rng(options.seed);
  const std::vector<Item> items = MakeItems(options, rng);
  std::string items_text;
  for (const Item& item : items) items_text += item.id + "\t" + item.title + "\n";
  WriteTextFile(dir / "items.tsv", items_text);
  WriteTextFile(dir / "users.tsv", MakeUsersFile(options, items, rng));

  fs::create_directory(dir / "images");
  ProgressMeter progress("synthetic images", options.num_items, "images");
  for (const Item& item : items) {
    WritePng(dir / "images" / (item.id + ".png"),
             MakeImage(item.category, item.style, options.num_categories, options.image_size, item.image_seed));
    progress.Advance(1);
  }
  progress.Finish();
}

void CheckOptions(const SynthOptions& options) {
  const auto require = [](bool ok, const std::string& message) {
    if (!ok) throw std::invalid_argument("synthetic dataset: " + message);
  };
  const int max_categories = static_cast<int>(kCategoryWords.size());
  require(options.num_categories >= 1 && options.num_categories <= max_categories,
          "num_categories must be in 1.." + std::to_string(max_categories));
  require(options.num_styles >= 1 && options.num_styles <= static_cast<int>(kStyleWords.size()),
          "num_styles must be in 1.." + std::to_string(kStyleWords.size()));
  require(options.num_items >= options.num_categories * options.num_styles,
          "num_items must be at least num_categories * num_styles");
  require(options.style_persistence >= 0 && options.style_persistence <= 1,
          "style_persistence must be in [0, 1]");
  require(options.num_users >= 1, "num_users must be at least 1");
  require(options.image_size >= 4, "image_size must be at least 4");
  require(options.min_seq_len >= 3 && options.min_seq_len <= options.max_seq_len,
          "need 3 <= min_seq_len <= max_seq_len");
  require(options.successor_probability >= 0 && options.successor_probability <= 1,
          "successor_probability must be in [0, 1]");
}

}  // namespace

void WriteSyntheticDataset(const fs::path& dir, const SynthOptions& options) {
  CheckOptions(options);
  fs::path target = fs::absolute(dir).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/" names "out"
  const fs::path parent = target.parent_path();
  const std::string name = target.filename().string();
  const fs::path staging = parent / ("." + name + ".partial");
  const fs::path retired = parent / ("." + name + ".replaced");
  try {
    const bool exists = fs::exists(target);
    if (exists && !fs::is_directory(target)) {
      throw InputError(target, 0, "exists and is not a folder; choose another output path");
    }
    const bool empty = !exists || fs::is_empty(target);
    if (!empty && !options.overwrite) {
      throw InputError(target, 0,
                       "folder is not empty; choose a new folder or set overwrite to replace it");
    }
    fs::create_directories(parent);
    RemoveTree(staging);  // left over from a writer that died
    fs::create_directory(staging);
    try {
      WriteDatasetFiles(staging, options);
      // The staging folder's files are not visible until the swap below, so they are written
      // plainly and made durable at once (one syncfs, not a fsync per image) before it.
      SyncFilesystemOf(staging);
    } catch (...) {
      RemoveTree(staging);
      throw;
    }
    if (exists && empty) {
      fs::remove(target);
    } else if (exists) {
      RemoveTree(retired);
      fs::rename(target, retired);
    }
    fs::rename(staging, target);
    SyncDirectory(parent);  // the swap itself survives a crash
    RemoveTree(retired);
  } catch (const fs::filesystem_error& error) {
    throw InputError(target, 0, std::string("cannot write the dataset: ") + error.what());
  } catch (const FileWriteError& error) {
    throw InputError(target, 0, std::string("cannot write the dataset: ") + error.what());
  }
}

int64_t WriteItemImages(const fs::path& dir, int size, uint64_t seed, int threads) {
  if (size < 1 || size > 4096) throw std::invalid_argument("image size must be in 1..4096, got " + std::to_string(size));
  PreprocessOptions options;
  options.require_images = false;
  const Dataset dataset = LoadDataset(dir, options);
  fs::create_directories(dir / "images");
  std::vector<int64_t> todo;
  for (int64_t item = 1; item <= dataset.num_items(); ++item) {
    if (dataset.image_paths[item].empty()) todo.push_back(item);
  }
  ProgressMeter progress("item images", static_cast<int64_t>(todo.size()), "images");
  std::atomic<int64_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto work = [&] {
    try {
      for (int64_t i = next++; i < static_cast<int64_t>(todo.size()); i = next++) {
        const int64_t item = todo[i];
        uint64_t hash = seed ^ 0x9E3779B97F4A7C15ULL;
        for (unsigned char c : dataset.titles[item]) hash = (hash ^ c) * 1099511628211ULL;
        const auto final_path = dir / "images" / (dataset.item_ids[item] + ".jpg");
        // Into the dataset folder in place: each image whole or not at all.
        const std::string jpeg =
            EncodeJpeg(MakeImage(static_cast<int>(hash % 16), static_cast<int>((hash >> 8) % 4), 16, size, hash));
        try {
          WriteFileAtomically(final_path, jpeg);
        } catch (const FileWriteError& error) {
          throw InputError(final_path, 0, std::string("cannot write the image: ") + error.what());
        }
        progress.Advance(1);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      next = static_cast<int64_t>(todo.size());
    }
  };
  std::vector<std::thread> workers;
  for (int t = 0; t < std::max(1, threads); ++t) workers.emplace_back(work);
  for (auto& worker : workers) worker.join();
  if (failure) std::rethrow_exception(failure);
  progress.Finish();
  return static_cast<int64_t>(todo.size());
}

}  // namespace iisan::data
