// Parsing and validation of Hugging Face BERT / ViT config.json files.
#include "core/models/backbone_config.h"
#include "core/data/json_input.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace iisan::models {
namespace {

// Typed access to the fields of one config object; every error names the source and field.
class FieldReader {
 public:
  FieldReader(const nlohmann::json& json, const std::string& source) : json_(json), source_(source) {
    if (!json_.is_object()) {
      throw std::runtime_error(source_ + ": the top level must be a JSON object, got " +
                               std::string(json_.type_name()));
    }
  }

  int64_t RequiredInt(const char* field) const { return AsInt(field, Required(field)); }

  int64_t Int(const char* field, int64_t fallback) const {
    const auto* value = Find(field);
    return value ? AsInt(field, *value) : fallback;
  }

  double Number(const char* field, double fallback) const {
    const auto* value = Find(field);
    if (!value) return fallback;
    if (!value->is_number()) WrongType(field, "a number", *value);
    return value->get<double>();
  }

  bool Bool(const char* field, bool fallback) const {
    const auto* value = Find(field);
    if (!value) return fallback;
    if (!value->is_boolean()) WrongType(field, "a boolean", *value);
    return value->get<bool>();
  }

  std::string String(const char* field, const std::string& fallback) const {
    const auto* value = Find(field);
    if (!value) return fallback;
    if (!value->is_string()) WrongType(field, "a string", *value);
    return value->get<std::string>();
  }

  HiddenActivation Activation(const char* field) const {
    const std::string name = String(field, "gelu");
    try {
      return ParseHiddenActivation(name);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(source_ + ": field '" + field + "' " + e.what());
    }
  }

 private:
  const nlohmann::json* Find(const char* field) const {
    const auto it = json_.find(field);
    return it == json_.end() ? nullptr : &*it;
  }

  const nlohmann::json& Required(const char* field) const {
    const auto* value = Find(field);
    if (!value) {
      throw std::runtime_error(source_ + ": required field '" + field +
                               "' is missing; add it (it fixes the shapes of the model's weights)");
    }
    return *value;
  }

  int64_t AsInt(const char* field, const nlohmann::json& value) const {
    if (!value.is_number_integer()) WrongType(field, "an integer", value);
    return value.get<int64_t>();
  }

  [[noreturn]] void WrongType(const char* field, const char* expected, const nlohmann::json& value) const {
    throw std::runtime_error(source_ + ": field '" + field + "' must be " + expected + ", got " +
                             std::string(value.type_name()) + " " + data::DescribeJsonValue(value));
  }

  const nlohmann::json& json_;
  const std::string& source_;
};

nlohmann::json ReadJsonFile(const std::string& path) {
  if (!std::ifstream(path)) {
    throw std::runtime_error(path + ": cannot open the config file; check the backbone folder path");
  }
  try {
    return data::ReadJsonFile<nlohmann::json>(path, {size_t{1} << 20, 16});
  } catch (const data::InputError& e) {
    throw std::runtime_error(e.what());
  }
}

// Shortest natural form (768, 0.1, 1e-12) rather than std::to_string's fixed six decimals.
template <typename T>
std::string FormatNumber(T value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

template <typename T>
void RequirePositive(const std::string& source, const char* field, T value) {
  if (!(value > 0)) {
    throw std::runtime_error(source + ": field '" + field + "' must be positive, got " + FormatNumber(value));
  }
}

// Upper bounds on the sizes that fix the weights' shapes: far above any BERT- or ViT-family
// backbone (bert-large: hidden 1024, 24 layers; ViT-H/14: 1280, 32 layers, 256 patches), and
// small enough that every product the models form from them (embedding tables, attention
// scores over the longest sequence, the patch grid) fits in int64. A config past them is
// corrupt, and building its model would fail far from the file that caused it.
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxHidden = int64_t{1} << 16;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxIntermediate = int64_t{1} << 20;
constexpr int64_t kMaxPositions = int64_t{1} << 20;
constexpr int64_t kMaxTypeVocab = int64_t{1} << 16;
constexpr int64_t kMaxImageSide = int64_t{1} << 16;
constexpr int64_t kMaxPatches = int64_t{1} << 20;
constexpr int64_t kMaxChannels = 64;

void RequireAtMost(const std::string& source, const char* field, int64_t value, int64_t limit) {
  if (value > limit) {
    throw std::runtime_error(source + ": field '" + field + "' is " + std::to_string(value) + ", more than " +
                             std::to_string(limit) + "; no backbone is that large (a corrupt config.json?)");
  }
}

void RequireProbability(const std::string& source, const char* field, double value) {
  if (!(value >= 0 && value < 1)) {
    throw std::runtime_error(source + ": field '" + field + "' must be in [0, 1), got " + FormatNumber(value));
  }
}

void RequireDivisible(const std::string& source, const char* field, int64_t value, const char* divisor_field,
                      int64_t divisor) {
  if (value % divisor != 0) {
    throw std::runtime_error(source + ": field '" + field + "' (" + std::to_string(value) +
                             ") must be a multiple of '" + divisor_field + "' (" + std::to_string(divisor) + ")");
  }
}

}  // namespace

HiddenActivation ParseHiddenActivation(const std::string& name) {
  if (name == "gelu") return HiddenActivation::kGelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return HiddenActivation::kGeluTanh;
  if (name == "relu") return HiddenActivation::kRelu;
  if (name == "silu" || name == "swish") return HiddenActivation::kSilu;
  throw std::runtime_error("must be one of gelu, gelu_new, gelu_pytorch_tanh, relu, silu, swish; got " +
                           data::DescribeJsonValue(name));
}

BertConfig BertConfig::FromJson(const nlohmann::json& json, const std::string& source) {
  const FieldReader reader(json, source);
  // Relative or rotary position embeddings would need a different attention; refuse them
  // rather than silently computing something else.
  const std::string position_type = reader.String("position_embedding_type", "absolute");
  if (position_type != "absolute") {
    throw std::runtime_error(source + ": field 'position_embedding_type' must be \"absolute\", got \"" +
                             position_type + "\"; only absolute position embeddings are implemented");
  }
  BertConfig config;
  config.vocab_size = reader.RequiredInt("vocab_size");
  config.hidden_size = reader.RequiredInt("hidden_size");
  config.num_hidden_layers = reader.RequiredInt("num_hidden_layers");
  config.num_attention_heads = reader.RequiredInt("num_attention_heads");
  config.intermediate_size = reader.RequiredInt("intermediate_size");
  config.hidden_act = reader.Activation("hidden_act");
  config.hidden_dropout_prob = reader.Number("hidden_dropout_prob", config.hidden_dropout_prob);
  config.attention_probs_dropout_prob =
      reader.Number("attention_probs_dropout_prob", config.attention_probs_dropout_prob);
  config.max_position_embeddings = reader.Int("max_position_embeddings", config.max_position_embeddings);
  config.type_vocab_size = reader.Int("type_vocab_size", config.type_vocab_size);
  config.layer_norm_eps = reader.Number("layer_norm_eps", config.layer_norm_eps);
  config.initializer_range = reader.Number("initializer_range", config.initializer_range);
  config.pad_token_id = reader.Int("pad_token_id", config.pad_token_id);
  config.Validate(source);
  return config;
}

BertConfig BertConfig::FromJsonFile(const std::string& path) { return FromJson(ReadJsonFile(path), path); }

void BertConfig::Validate(const std::string& source) const {
  RequirePositive(source, "vocab_size", vocab_size);
  RequirePositive(source, "hidden_size", hidden_size);
  RequirePositive(source, "num_hidden_layers", num_hidden_layers);
  RequirePositive(source, "num_attention_heads", num_attention_heads);
  RequirePositive(source, "intermediate_size", intermediate_size);
  RequirePositive(source, "max_position_embeddings", max_position_embeddings);
  RequirePositive(source, "type_vocab_size", type_vocab_size);
  RequirePositive(source, "layer_norm_eps", layer_norm_eps);
  RequireProbability(source, "hidden_dropout_prob", hidden_dropout_prob);
  RequireProbability(source, "attention_probs_dropout_prob", attention_probs_dropout_prob);
  RequireDivisible(source, "hidden_size", hidden_size, "num_attention_heads", num_attention_heads);
  RequirePositive(source, "initializer_range", initializer_range);
  RequireAtMost(source, "vocab_size", vocab_size, kMaxVocab);
  RequireAtMost(source, "hidden_size", hidden_size, kMaxHidden);
  RequireAtMost(source, "num_hidden_layers", num_hidden_layers, kMaxLayers);
  RequireAtMost(source, "intermediate_size", intermediate_size, kMaxIntermediate);
  RequireAtMost(source, "max_position_embeddings", max_position_embeddings, kMaxPositions);
  RequireAtMost(source, "type_vocab_size", type_vocab_size, kMaxTypeVocab);
  if (pad_token_id < 0 || pad_token_id >= vocab_size) {
    throw std::runtime_error(source + ": field 'pad_token_id' (" + std::to_string(pad_token_id) +
                             ") must be a token id below 'vocab_size' (" + std::to_string(vocab_size) + ")");
  }
}

ViTConfig ViTConfig::FromJson(const nlohmann::json& json, const std::string& source) {
  const FieldReader reader(json, source);
  ViTConfig config;
  config.hidden_size = reader.RequiredInt("hidden_size");
  config.num_hidden_layers = reader.RequiredInt("num_hidden_layers");
  config.num_attention_heads = reader.RequiredInt("num_attention_heads");
  config.intermediate_size = reader.RequiredInt("intermediate_size");
  config.hidden_act = reader.Activation("hidden_act");
  config.hidden_dropout_prob = reader.Number("hidden_dropout_prob", config.hidden_dropout_prob);
  config.attention_probs_dropout_prob =
      reader.Number("attention_probs_dropout_prob", config.attention_probs_dropout_prob);
  config.layer_norm_eps = reader.Number("layer_norm_eps", config.layer_norm_eps);
  config.image_size = reader.RequiredInt("image_size");
  config.patch_size = reader.RequiredInt("patch_size");
  config.num_channels = reader.Int("num_channels", config.num_channels);
  config.qkv_bias = reader.Bool("qkv_bias", config.qkv_bias);
  config.initializer_range = reader.Number("initializer_range", config.initializer_range);
  config.Validate(source);
  return config;
}

ViTConfig ViTConfig::FromJsonFile(const std::string& path) { return FromJson(ReadJsonFile(path), path); }

void ViTConfig::Validate(const std::string& source) const {
  RequirePositive(source, "hidden_size", hidden_size);
  RequirePositive(source, "num_hidden_layers", num_hidden_layers);
  RequirePositive(source, "num_attention_heads", num_attention_heads);
  RequirePositive(source, "intermediate_size", intermediate_size);
  RequirePositive(source, "image_size", image_size);
  RequirePositive(source, "patch_size", patch_size);
  RequirePositive(source, "num_channels", num_channels);
  RequirePositive(source, "layer_norm_eps", layer_norm_eps);
  RequireProbability(source, "hidden_dropout_prob", hidden_dropout_prob);
  RequireProbability(source, "attention_probs_dropout_prob", attention_probs_dropout_prob);
  RequireDivisible(source, "hidden_size", hidden_size, "num_attention_heads", num_attention_heads);
  RequireDivisible(source, "image_size", image_size, "patch_size", patch_size);
  RequirePositive(source, "initializer_range", initializer_range);
  RequireAtMost(source, "hidden_size", hidden_size, kMaxHidden);
  RequireAtMost(source, "num_hidden_layers", num_hidden_layers, kMaxLayers);
  RequireAtMost(source, "intermediate_size", intermediate_size, kMaxIntermediate);
  RequireAtMost(source, "image_size", image_size, kMaxImageSide);
  RequireAtMost(source, "num_channels", num_channels, kMaxChannels);
  if (num_patches() > kMaxPatches) {
    throw std::runtime_error(source + ": 'image_size' / 'patch_size' (" + std::to_string(image_size) + " / " +
                             std::to_string(patch_size) + ") gives " + std::to_string(num_patches()) +
                             " patches, more than " + std::to_string(kMaxPatches) + " (a corrupt config.json?)");
  }
}

}  // namespace iisan::models
