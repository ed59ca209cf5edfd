// A synthetic dataset in the exact on-disk format LoadDataset reads (users.tsv, items.tsv,
// images/<item>.png), with structure planted so that content beats popularity: every item has a
// latent category (title words, image hue) and a latent style (a title word, image pattern);
// users move between categories along a fixed successor map and mostly keep their style, and
// items of one (category, style) group are equally likely. Content plus transitions thus
// predicts the next item's group, popularity predicts little. Used for tests, demos and scaling.
#pragma once

#include <cstdint>
#include <filesystem>

namespace iisan::data {

struct SynthOptions {
  int num_users = 3000;
  int num_items = 1200;
  int num_categories = 12;  // at most 16
  int num_styles = 4;       // at most 4
  int image_size = 32;      // square PNGs, pixels per side
  int min_seq_len = 5;
  int max_seq_len = 20;
  // Probability that the next item's category is the current category's fixed successor rather
  // than a uniformly random one.
  double successor_probability = 0.8;
  // Probability that the next item keeps the current item's style rather than a random one.
  double style_persistence = 0.8;
  uint64_t seed = 7;
  bool overwrite = false;  // replace a non-empty dir instead of refusing
};

// Writes the dataset into dir. The output depends only on the options (same seed, same bytes).
// It is built in a hidden sibling folder and renamed into place, so dir never holds a partial
// dataset. InputError if dir is not empty and overwrite is off, or if writing fails;
// std::invalid_argument for impossible options.
void WriteSyntheticDataset(const std::filesystem::path& dir, const SynthOptions& options = {});

// For a real dataset that comes without images (the Amazon TSVs): writes images/<item>.jpg,
// size x size, for every item of dir/items.tsv that has no image yet, so that image pipelines
// and efficiency runs see realistic JPEG decoding. Each image is a patterned picture whose
// hue and pattern derive from a hash of the item's title (similar titles, similar images is
// not promised). Files are written under a temporary name and renamed; existing images are
// kept. `threads` workers encode in parallel. Returns the number of images written.
int64_t WriteItemImages(const std::filesystem::path& dir, int size, uint64_t seed, int threads);

}  // namespace iisan::data
