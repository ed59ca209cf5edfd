// Finding a Hugging Face folder's weight files, reading them, and matching their tensors to a
// module by name, all checked before the module is touched.
#include "core/models/hf_checkpoint.h"

#include <fstream>
#include <map>
#include <set>

#include <glog/logging.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/data/json_input.h"

namespace iisan::models {
namespace {

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";
// Beyond this many names per kind, an error gives the count only: a wrong architecture can
// mismatch hundreds of tensors, and the first few say what went wrong.
constexpr size_t kMaxListedNames = 20;

// Weight files Hugging Face writes in formats we do not read, with the from_pretrained
// argument that loads each for conversion.
struct ForeignFormat {
  const char* file;
  const char* load_argument;
};
constexpr ForeignFormat kForeignFormats[] = {
    {"pytorch_model.bin", ""},
    {"pytorch_model.bin.index.json", ""},
    {"tf_model.h5", ", from_tf=True"},
    {"flax_model.msgpack", ", from_flax=True"},
};

// The files of a checkpoint and, for a sharded one, which shard the index places each tensor in.
struct CheckpointLayout {
  std::vector<std::filesystem::path> files;
  std::map<std::string, std::string> weight_map;
};

std::map<std::string, std::string> ReadWeightMap(const std::filesystem::path& index_path) {
  const std::string where = index_path.string() + ": ";
  nlohmann::json index;
  try {
    index = data::ReadJsonFile<nlohmann::json>(index_path, {size_t{64} << 20, 8});
  } catch (const data::InputError& e) {
    throw CheckpointError(e.what());
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    throw CheckpointError(where + "must be a JSON object with a 'weight_map' object (tensor name -> shard file)");
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    // A shard is a file of this folder; a path could read weights from anywhere.
    const bool plain_file_name = shard.is_string() && !shard.get<std::string>().empty() &&
                                 shard.get<std::string>().find('/') == std::string::npos &&
                                 shard.get<std::string>() != "." && shard.get<std::string>() != "..";
    if (!plain_file_name) {
      throw CheckpointError(where + "weight_map['" + name + "'] must be the file name of a shard in the folder, got " +
                            shard.dump());
    }
    weight_map[name] = shard.get<std::string>();
  }
  return weight_map;
}

[[noreturn]] void ThrowNoSafetensors(const std::filesystem::path& folder) {
  for (const auto& format : kForeignFormats) {
    if (!std::filesystem::exists(folder / format.file)) continue;
    const std::string dir = folder.string();
    throw CheckpointError(
        folder.string() + ": the weights are in " + format.file + ", which iisan does not read (only safetensors is " +
        "safe to load from untrusted sources). Convert them once, where Hugging Face transformers is installed:\n"
        "  python -c \"from transformers import AutoModel; AutoModel.from_pretrained('" + dir + "'" +
        format.load_argument + ").save_pretrained('" + dir + "', safe_serialization=True)\"");
  }
  throw CheckpointError(folder.string() + ": no " + kSingleFile + " or " + kIndexFile);
}

CheckpointLayout ResolveLayout(const std::filesystem::path& folder) {
  CheckpointLayout layout;
  // Hugging Face prefers the single file where both exist; so do we.
  if (std::filesystem::is_regular_file(folder / kSingleFile)) {
    layout.files.push_back(folder / kSingleFile);
    return layout;
  }
  if (!std::filesystem::is_regular_file(folder / kIndexFile)) ThrowNoSafetensors(folder);
  layout.weight_map = ReadWeightMap(folder / kIndexFile);
  std::set<std::string> shards;
  for (const auto& [name, shard] : layout.weight_map) {
    if (!std::filesystem::is_regular_file(folder / shard)) {
      throw CheckpointError((folder / kIndexFile).string() + ": shard " + shard + " (of tensor '" + name +
                            "') is missing from the folder");
    }
    shards.insert(shard);
  }
  if (shards.empty()) throw CheckpointError((folder / kIndexFile).string() + ": 'weight_map' is empty");
  for (const auto& shard : shards) layout.files.push_back(folder / shard);
  return layout;
}

bool StartsWithAny(const std::string& name, const std::vector<std::string>& prefixes) {
  for (const auto& prefix : prefixes) {
    if (name.starts_with(prefix)) return true;
  }
  return false;
}

// The module-side name of a checkpoint tensor.
std::string MappedName(const std::string& name, const StateDictMapping& mapping) {
  std::string mapped = name;
  for (const auto& prefix : mapping.strip_prefixes) {
    if (mapped.starts_with(prefix)) {
      mapped.erase(0, prefix.size());
      break;
    }
  }
  for (const auto& [legacy, current] : mapping.renamed_suffixes) {
    if (mapped.ends_with(legacy)) {
      mapped.replace(mapped.size() - legacy.size(), legacy.size(), current);
      break;
    }
  }
  return mapped;
}

std::string ShapeText(const torch::Tensor& tensor) {
  std::string text = "[";
  for (int64_t d = 0; d < tensor.dim(); ++d) text += (d ? ", " : "") + std::to_string(tensor.size(d));
  return text + "]";
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string text;
  for (size_t i = 0; i < names.size() && i < kMaxListedNames; ++i) text += (i ? ", " : "") + names[i];
  if (names.size() > kMaxListedNames) text += ", … and " + std::to_string(names.size() - kMaxListedNames) + " more";
  return text;
}

void LoadCheckpoint(torch::nn::Module& module, const std::filesystem::path& folder, const StateDictMapping& mapping) {
  LoadStateDict(module, ReadCheckpointTensors(folder), mapping, folder.string());
}

}  // namespace

bool HasCheckpoint(const std::filesystem::path& folder) {
  if (std::filesystem::exists(folder / kSingleFile) || std::filesystem::exists(folder / kIndexFile)) return true;
  for (const auto& format : kForeignFormats) {
    if (std::filesystem::exists(folder / format.file)) return true;
  }
  return false;
}

std::vector<std::filesystem::path> CheckpointFiles(const std::filesystem::path& folder) {
  return ResolveLayout(folder).files;
}

NamedTensors ReadCheckpointTensors(const std::filesystem::path& folder) {
  const auto layout = ResolveLayout(folder);
  std::map<std::string, std::pair<torch::Tensor, std::filesystem::path>> found;
  for (const auto& file : layout.files) {
    const SafetensorsReader reader(file);
    for (const auto& name : reader.names()) {
      const auto [previous, inserted] = found.try_emplace(name, reader.Tensor(name), file);
      if (!inserted) {
        throw CheckpointError(folder.string() + ": tensor '" + name + "' is in both " +
                              previous->second.second.filename().string() + " and " + file.filename().string());
      }
    }
  }
  // An index that misplaces a tensor points at a stale or mixed-up set of shards.
  for (const auto& [name, shard] : layout.weight_map) {
    const auto tensor = found.find(name);
    if (tensor == found.end() || tensor->second.second.filename() != shard) {
      throw CheckpointError((folder / kIndexFile).string() + ": places tensor '" + name + "' in " + shard +
                            ", but that shard does not hold it");
    }
  }
  NamedTensors tensors;
  tensors.reserve(found.size());
  for (auto& [name, entry] : found) tensors.emplace_back(name, std::move(entry.first));
  return tensors;
}

void LoadStateDict(torch::nn::Module& module, const NamedTensors& tensors, const StateDictMapping& mapping,
                   const std::string& source) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& item : module.named_parameters()) targets.emplace(item.key(), item.value());
  for (const auto& item : module.named_buffers()) targets.emplace(item.key(), item.value());

  std::map<std::string, const NamedTensors::value_type*> matched;  // module name -> checkpoint entry
  std::set<std::string> mis_shaped_targets;
  std::vector<std::string> unexpected, mis_shaped;
  size_t ignored = 0;
  for (const auto& entry : tensors) {
    const auto& [name, tensor] = entry;
    const std::string key = MappedName(name, mapping);
    if (StartsWithAny(key, mapping.ignored)) {
      ++ignored;
      continue;
    }
    const auto target = targets.find(key);
    if (target == targets.end()) {
      unexpected.push_back(name);
    } else if (target->second.sizes() != tensor.sizes()) {
      mis_shaped.push_back(name + " (checkpoint " + ShapeText(tensor) + ", model " + ShapeText(target->second) + ")");
      mis_shaped_targets.insert(key);
    } else if (const auto [other, inserted] = matched.emplace(key, &entry); !inserted) {
      throw CheckpointError(source + ": checkpoint tensors '" + other->second->first + "' and '" + name +
                            "' both map to the model's '" + key + "'");
    }
  }
  std::vector<std::string> missing, kept_initialised;
  for (const auto& [name, target] : targets) {
    if (matched.count(name) != 0 || mis_shaped_targets.count(name) != 0) continue;
    // Adapters and LoRA factors are ours, added on top of the pretrained model: they keep their init.
    const bool peft = name.find(".adapter.") != std::string::npos || name.find(".lora_") != std::string::npos;
    (peft || StartsWithAny(name, mapping.optional) ? kept_initialised : missing).push_back(name);
  }
  if (!missing.empty() || !unexpected.empty() || !mis_shaped.empty()) {
    std::string message = source + ": the checkpoint does not fit the model (" + std::to_string(missing.size()) +
                          " missing, " + std::to_string(unexpected.size()) + " unexpected, " +
                          std::to_string(mis_shaped.size()) + " mis-shaped); is config.json the checkpoint's own?";
    if (!missing.empty()) message += "\n  missing (the model has them, the checkpoint does not): " + JoinNames(missing);
    if (!unexpected.empty()) message += "\n  unexpected (in the checkpoint, not in the model): " + JoinNames(unexpected);
    if (!mis_shaped.empty()) message += "\n  mis-shaped: " + JoinNames(mis_shaped);
    throw CheckpointError(message);
  }

  torch::NoGradGuard no_grad;
  for (const auto& [key, entry] : matched) targets.at(key).copy_(entry->second);
  LOG(INFO) << source << ": loaded " << matched.size() << " tensors; ignored " << ignored
            << " (heads and buffers the encoder does not have)";
  if (!kept_initialised.empty()) {
    LOG(INFO) << source << ": not in the checkpoint, kept at their initialisation as forward does not use them: "
              << JoinNames(kept_initialised);
  }
}

StateDictMapping BertStateDictMapping() {
  StateDictMapping mapping;
  mapping.strip_prefixes = {"bert."};
  // bert-base-uncased's own files still use the TF-era LayerNorm names.
  mapping.renamed_suffixes = {{"LayerNorm.gamma", "LayerNorm.weight"}, {"LayerNorm.beta", "LayerNorm.bias"}};
  mapping.ignored = {"cls.", "classifier.", "embeddings.position_ids", "embeddings.token_type_ids"};
  // Masked-LM checkpoints have no pooler, and IISAN taps hidden states, never the pooled output.
  mapping.optional = {"pooler."};
  return mapping;
}

StateDictMapping ViTStateDictMapping() {
  StateDictMapping mapping;
  mapping.strip_prefixes = {"vit."};
  mapping.ignored = {"classifier.", "pooler.", "embeddings.mask_token"};
  return mapping;
}

void LoadBertCheckpoint(BertModel& model, const std::filesystem::path& folder) {
  LoadCheckpoint(*model, folder, BertStateDictMapping());
}

void LoadViTCheckpoint(ViTModel& model, const std::filesystem::path& folder) {
  LoadCheckpoint(*model, folder, ViTStateDictMapping());
}

}  // namespace iisan::models
