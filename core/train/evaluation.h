// Full-ranking evaluation of a model (IISAN.md §3.6) on the validation or test split, and the
// popularity baseline ranked the same way. Data-parallel: each rank ranks one contiguous range
// of users and the metric sums are reduced, so that no user is counted twice.
//
// A pass embeds every item once, then scores its users against the whole item table in chunks
// as large as EvalOptions allows (EvaluationChunkUsers), ranks and sums on the model's device,
// and reads the device once at the end. What a pass reads per user (histories, targets, the
// excluded items) is an EvaluationSet, built once per split and reused by every evaluation.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "core/data/dataset.h"
#include "core/train/data_parallel.h"
#include "core/train/ranking.h"
#include "core/train/recommender.h"

namespace iisan::train {

enum class Split { kValid, kTest };

// The largest EvalOptions::memory_mb (1 TiB), so that the budget in bytes cannot overflow.
inline constexpr int64_t kMaxEvalMemoryMb = int64_t{1} << 20;

struct EvalOptions {
  // The most users scored per matmul; the default caps nothing, so that memory_mb decides.
  int64_t batch_size = int64_t{1} << 20;
  // What a chunk of users may take on the device (MiB): their user encoder's activations, their
  // scores against all N + 1 items and the comparisons that rank them (EvaluationChunkUsers);
  // and a chunk of cached IISAN's items while the item table is embedded (ItemTableChunk).
  int64_t memory_mb = 128;
  std::vector<int> ks = {5, 10, 20};
  // False (the reference): every history item is excluded from the ranking, so a target that
  // repeats one always misses (IISAN.md §9.9). True: the target itself is never excluded.
  bool count_repeated_targets = false;
};

// Users per scoring chunk when each user takes `bytes_per_user` of device memory while being
// ranked: as many as options.memory_mb holds, at most options.batch_size, at least 1. A model's
// users take kRankBytesPerScore per item score plus their user encoder's activations; the
// popularity baseline's, the scores alone.
int64_t EvaluationChunkUsers(const EvalOptions& options, int64_t bytes_per_user);

// Items per forward pass when the whole item table is embedded. Cached IISAN reads stored
// states: as many items as `memory_mb` (eval.memory_mb) holds at CachedItemBytes each, at most
// kCachedItemTableChunk, at least 1. Live methods run the backbones, whose per-item activations
// are a hundred times more: kLiveItemTableChunk. A memory_mb out of range is refused as
// EvaluationChunkUsers refuses it.
inline constexpr int64_t kCachedItemTableChunk = 4096;
inline constexpr int64_t kLiveItemTableChunk = 256;
// Device bytes an item of cached IISAN's table takes while it is embedded: its K states per
// modality gathered and converted to float32, and the side network's activations, about as many
// again (86,016 bytes at base widths: 2 x 7 x 768 x 2 modalities x 4 bytes).
int64_t CachedItemBytes(const RecommenderConfig& config);
int64_t ItemTableChunk(const RecommenderConfig& config, int64_t memory_mb);

// Whether two devices name the same one: equal, or of one type where one of them names no index
// (a tensor made on "cuda" reports "cuda:0", the current device; options may still say "cuda").
bool SameDevice(const torch::Device& a, const torch::Device& b);

// What ranking one split needs for users [first, last) of a dataset, on one device.
struct EvaluationSet {
  int64_t first_user = 0;     // the dataset's users [first_user, first_user + size())
  int64_t dataset_users = 0;  // every user of the dataset: what a reduction over ranks expects
  bool count_repeated_targets = false;
  torch::Tensor histories;  // [U, L] int64, each user's last <= L inputs, left-padded with 0
  RankingTargets targets;

  int64_t size() const { return histories.size(0); }
};

// Built on the host once, then copied to `device`. std::invalid_argument for a range outside
// the dataset's users.
EvaluationSet MakeEvaluationSet(const data::Dataset& dataset, Split split, std::pair<int64_t, int64_t> users,
                                bool count_repeated_targets, const torch::Device& device);
// The set of this rank's users (every user without `parallel`) for `options`.
EvaluationSet MakeEvaluationSet(const data::Dataset& dataset, Split split, const EvalOptions& options,
                                const torch::Device& device, DataParallel* parallel = nullptr);

// Ranks every user of `set` with `model` (eval mode, no autograd); `set` must be on the model's
// device and built with options.count_repeated_targets. With `parallel`, `set` holds this
// rank's users (parallel->EvaluationUsers) and every rank returns the reduced metrics.
RankingMetrics EvaluateModel(Recommender& model, const EvaluationSet& set, const EvalOptions& options,
                             DataParallel* parallel = nullptr);
// How many chunks of users EvaluateModel scores `set` in for a model of `config`.
int64_t EvaluationChunks(const RecommenderConfig& config, const EvaluationSet& set, const EvalOptions& options);
// The same with a set built for this one call (this rank's users with `parallel`).
RankingMetrics EvaluateModel(Recommender& model, const data::Dataset& dataset, Split split, const EvalOptions& options,
                             DataParallel* parallel = nullptr);

// The popularity baseline, on the CPU: every user gets items ranked by train-split popularity,
// with the same history exclusion, tie-breaking and chunking as the model.
RankingMetrics EvaluatePopularity(const data::Dataset& dataset, Split split, const EvalOptions& options);

}  // namespace iisan::train
