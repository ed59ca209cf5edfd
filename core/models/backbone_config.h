// Hyperparameters of the frozen backbones (BERT-family text, ViT-family image), read from a
// Hugging Face model folder's config.json.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace iisan::models {

// How an encoder's constructor fills its weights: Hugging Face's random init, or no init of
// ours (LibTorch's module defaults; zeros where it has none) when a checkpoint overwrites every
// weight the forward reads next. At base size on 2 threads that init takes 0.4 s (BERT) and
// 1.9 s (ViT) of CPU time (experiments/bench/backbone_setup.cpp).
enum class WeightInit { kRandom, kSkip };

// Parameter-efficient additions inside a backbone (IISAN.md §5); zero means absent.
struct PeftConfig {
  // Houlsby adapters: a SANB (hidden -> bottleneck -> hidden, ReLU, residual) after the
  // attention output projection and after the feed-forward output projection of every layer.
  int64_t adapter_bottleneck = 0;
  // LoRA on every layer's query and value projections: W x + b + (alpha / rank) B A x, with A
  // kaiming-uniform and B zero (loralib's init), so a fresh model computes what the
  // pretrained one does. The pretrained W and b are kept (the reference discards them,
  // IISAN.md §9.1; we do not reproduce that bug).
  int64_t lora_rank = 0;
  double lora_alpha = 1.0;
};

// The `hidden_act` values of Hugging Face configs that the backbones implement.
enum class HiddenActivation {
  kGelu,      // "gelu": exact, erf-based
  kGeluTanh,  // "gelu_new", "gelu_pytorch_tanh": tanh approximation
  kRelu,      // "relu"
  kSilu,      // "silu", "swish"
};

// Throws std::runtime_error listing the accepted names.
HiddenActivation ParseHiddenActivation(const std::string& name);

// Fields that fix the shapes of the weights (sizes, layer and head counts) are required: a
// config without them cannot describe a checkpoint. The others default to Hugging Face's
// BertConfig defaults, as old config.json files (bert-base-uncased's own) omit some of them.
// Unknown fields are ignored; Hugging Face configs carry many that do not concern the encoder.
struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  HiddenActivation hidden_act = HiddenActivation::kGelu;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  double initializer_range = 0.02;
  int64_t pad_token_id = 0;

  // `source` names the origin (usually the file path) in error messages.
  static BertConfig FromJson(const nlohmann::json& json, const std::string& source);
  static BertConfig FromJsonFile(const std::string& path);
  // Throws std::runtime_error naming `source` and the first inconsistent field.
  void Validate(const std::string& source) const;

  bool operator==(const BertConfig&) const = default;
};

// Same policy as BertConfig; defaults are those of Hugging Face's ViTConfig.
struct ViTConfig {
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  HiddenActivation hidden_act = HiddenActivation::kGelu;
  double hidden_dropout_prob = 0.0;
  double attention_probs_dropout_prob = 0.0;
  double layer_norm_eps = 1e-12;
  int64_t image_size = 224;
  int64_t patch_size = 16;
  int64_t num_channels = 3;
  bool qkv_bias = true;
  double initializer_range = 0.02;

  static ViTConfig FromJson(const nlohmann::json& json, const std::string& source);
  static ViTConfig FromJsonFile(const std::string& path);
  void Validate(const std::string& source) const;

  // Patches per image side, squared: the sequence length is this plus the [CLS] token.
  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }

  bool operator==(const ViTConfig&) const = default;
};

}  // namespace iisan::models
