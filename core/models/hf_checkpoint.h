// Loading the weights of a Hugging Face model folder (model.safetensors, or the shards that
// model.safetensors.index.json names) into our encoders, whose parameter names are Hugging
// Face's: tensors are matched by name, after the architecture's naming differences are undone.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

#include "core/models/bert.h"
#include "core/models/safetensors.h"
#include "core/models/vit.h"

namespace iisan::models {

// A checkpoint folder that cannot be read, or whose tensors do not fit the module.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// How the names of a Hugging Face state dict map onto one of our modules. All name lists
// are prefixes, compared after stripping.
struct StateDictMapping {
  // Wrappers of task models ("bert." in BertForMaskedLM); the first that matches is removed.
  std::vector<std::string> strip_prefixes;
  // Legacy spellings, replaced where a name ends with them ("LayerNorm.gamma" of old BERTs).
  std::vector<std::pair<std::string, std::string>> renamed_suffixes;
  // Checkpoint tensors the module does not have and does not need: task heads, buffers.
  std::vector<std::string> ignored;
  // Module tensors a checkpoint may lack because forward never reads them; they keep their init.
  std::vector<std::string> optional;
};

// Whether the folder holds weights in any format Hugging Face saves (safetensors, single or
// sharded, or PyTorch / TensorFlow / Flax files). Without one, the caller decides whether
// random weights are acceptable; with one in a format we cannot read, loading explains how
// to convert it rather than leaving the weights random.
bool HasCheckpoint(const std::filesystem::path& folder);

// The safetensors files of the folder's checkpoint: model.safetensors, or else the shards
// named by model.safetensors.index.json, sorted. Throws CheckpointError when there are none,
// with the conversion command when only another format is present.
std::vector<std::filesystem::path> CheckpointFiles(const std::filesystem::path& folder);

// Every tensor of the folder's checkpoint, sorted by name; the tensors view the files' mappings.
NamedTensors ReadCheckpointTensors(const std::filesystem::path& folder);

// Copies `tensors` into the module's parameters and buffers of the same (mapped) name,
// converting to each one's dtype and device. Every missing, unexpected and mis-shaped name is
// gathered into one CheckpointError that names `source`; the module is changed only when the
// whole checkpoint fits.
void LoadStateDict(torch::nn::Module& module, const NamedTensors& tensors, const StateDictMapping& mapping,
                   const std::string& source);

// The mappings of Hugging Face's BERT and ViT families onto BertModel and ViTModel.
StateDictMapping BertStateDictMapping();
StateDictMapping ViTStateDictMapping();

void LoadBertCheckpoint(BertModel& model, const std::filesystem::path& folder);
void LoadViTCheckpoint(ViTModel& model, const std::filesystem::path& folder);

}  // namespace iisan::models
