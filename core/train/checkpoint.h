// The checkpoint format (DESIGN.md, formats). Checkpoints hold what trains: frozen weights come
// back from the backbone folder or the seed. Tensors are safetensors with the modules'
// PyTorch-style names, readable from Python. In a run's checkpoints/ folder:
//   best.safetensors   the trainable weights of the best epoch
//   last/              model.safetensors (trainable weights), trainer.safetensors (optimizer
//                      moments and step, generator states, the running loss mid-epoch) and
//                      trainer.json (progress, the epoch and step to continue from): what a
//                      resumed run continues from. Written into last.tmp, then swapped in by
//                      renames; a kill between the renames leaves last.old, which is accepted.
#pragma once

#include <filesystem>

#include "core/models/safetensors.h"
#include "core/train/recommender.h"
#include "core/train/trainer.h"

namespace iisan::train {

// Test-only fault injection, as the cache builder's: when set to k, a process kills itself
// (SIGKILL) right after step k of each SaveResumable: 1 last.tmp made, 2 model.safetensors,
// 3 trainer.safetensors, 4 trainer.json written, 5 a stale last.old removed, 6 last renamed to
// last.old, 7 last.tmp renamed to last (steps 5 and 6 happen only while a last exists).
inline constexpr const char* kEnvCheckpointKillAtStep = "IISAN_CHECKPOINT_TEST_KILL_AT_STEP";

// The trainable parameters, on the host, by name.
models::NamedTensors TrainableTensors(Recommender& model);
// Writes them as safetensors, atomically.
void SaveTrainableWeights(const std::filesystem::path& path, Recommender& model);
// Copies every trainable parameter from a safetensors file; a missing name or another shape is
// an std::runtime_error naming the file and tensor; so is a non-finite value.
void LoadTrainableWeights(Recommender& model, const std::filesystem::path& path);

// Writes checkpoints_dir/last as a whole (model and trainer state, at an epoch's end or mid-epoch).
// With `parallel`, every rank must call it: ranks other than 0 add their generator states
// (rng-rank<r>.safetensors, their own dropout draws) before rank 0 swaps the folder in.
void SaveResumable(const std::filesystem::path& checkpoints_dir, Recommender& model, const Trainer& trainer,
                   DataParallel* parallel = nullptr);
// Whether checkpoints_dir holds a resumable checkpoint (last, or last.old after a kill mid-swap).
bool HasResumable(const std::filesystem::path& checkpoints_dir);
// Its folder; std::runtime_error saying what to do when there is none.
std::filesystem::path FindResumable(const std::filesystem::path& checkpoints_dir);
// Loads a resumable checkpoint folder into the model and trainer; rank `rank` > 0 then takes its
// own generator states where the folder has them.
void ResumeFrom(const std::filesystem::path& dir, Recommender& model, Trainer& trainer, int rank = 0);

}  // namespace iisan::train
