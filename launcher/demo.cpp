// `iisan demo`: the main job end to end on the built-in synthetic dataset, with small
// backbones (random weights) whose configs and vocabulary the demo writes itself, so that it
// needs nothing outside the repository.
#include <fstream>
#include <iomanip>
#include <set>

#include <glog/logging.h>

#include "core/data/dataset.h"
#include "launcher/commands.h"
#include "launcher/run_dir.h"

namespace iisan::launcher {
namespace {

const char* kTinyBertConfig = R"({
  "model_type": "bert", "vocab_size": 0, "hidden_size": 128, "num_hidden_layers": 4,
  "num_attention_heads": 4, "intermediate_size": 256, "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
  "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
  "initializer_range": 0.2, "pad_token_id": 0
})";

const char* kTinyVitConfig = R"({
  "model_type": "vit", "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
  "intermediate_size": 256, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
  "attention_probs_dropout_prob": 0.0, "layer_norm_eps": 1e-12, "image_size": 32,
  "patch_size": 8, "num_channels": 3, "qkv_bias": true, "initializer_range": 0.2
})";

const char* kTinyVitPreprocessor = R"({
  "do_normalize": true, "do_resize": true, "do_rescale": true,
  "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": 32
})";

// A WordPiece vocabulary covering the synthetic titles: special tokens, every lower-cased
// word, and single characters (plain and ## continuations) so that any word can be spelled.
std::vector<std::string> VocabularyFor(const data::Dataset& dataset) {
  std::set<std::string> words;
  std::set<char> chars;
  for (size_t item = 1; item < dataset.titles.size(); ++item) {
    std::string word;
    for (char c : dataset.titles[item] + " ") {
      const unsigned char u = static_cast<unsigned char>(c);
      if (std::isalnum(u)) {
        word += static_cast<char>(std::tolower(u));
        chars.insert(static_cast<char>(std::tolower(u)));
        continue;
      }
      if (!word.empty()) words.insert(word);
      word.clear();
      if (std::ispunct(u)) chars.insert(c);
    }
  }
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (char c : chars) vocab.emplace_back(1, c);
  for (char c : chars) {
    if (std::isalnum(static_cast<unsigned char>(c))) vocab.push_back(std::string("##") + c);
  }
  for (const auto& word : words) {
    if (word.size() > 1) vocab.push_back(word);
  }
  return vocab;
}

void WriteText(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path);
  out << text;
  if (!out) throw std::runtime_error(path.string() + ": cannot write");
}

void WriteBackbones(const std::filesystem::path& workdir, const data::Dataset& dataset) {
  const auto vocab = VocabularyFor(dataset);
  std::string vocab_text;
  for (const auto& token : vocab) vocab_text += token + "\n";
  WriteText(workdir / "backbones/text/vocab.txt", vocab_text);
  auto bert = nlohmann::json::parse(kTinyBertConfig);
  bert["vocab_size"] = vocab.size();
  WriteText(workdir / "backbones/text/config.json", bert.dump(2) + "\n");
  WriteText(workdir / "backbones/image/config.json", nlohmann::json::parse(kTinyVitConfig).dump(2) + "\n");
  WriteText(workdir / "backbones/image/preprocessor_config.json",
            nlohmann::json::parse(kTinyVitPreprocessor).dump(2) + "\n");
}

std::string Row(const std::string& method, double hr, double ndcg) {
  std::ostringstream out;
  out << "| " << std::left << std::setw(22) << method << " | " << std::right << std::fixed << std::setprecision(4)
      << std::setw(7) << hr << " | " << std::setw(7) << ndcg << " |\n";
  return out.str();
}

}  // namespace

void Demo(const std::filesystem::path& workdir, const std::vector<std::string>& overrides, std::ostream& out) {
  const auto data_dir = workdir / "data";
  if (!std::filesystem::exists(data_dir / "users.tsv")) {
    SynthCommandOptions synth;
    synth.dir = data_dir;
    DataSynth(synth, out);
  } else {
    out << "using the synthetic dataset in " << data_dir.string() << "\n";
  }
  const auto dataset = data::LoadDataset(data_dir, data::PreprocessOptions{});
  WriteBackbones(workdir, dataset);

  Config config = LoadConfig(std::filesystem::path(IISAN_DEMO_CONFIG), {});
  config.data.dir = data_dir.string();
  config.model.text_backbone = (workdir / "backbones/text").string();
  config.model.image_backbone = (workdir / "backbones/image").string();
  config.cache.dir = (workdir / "cache").string();
  config.run_root = (workdir / "runs").string();
  config.name = TimestampedName("demo");
  for (const auto& assignment : overrides) ApplyOverride(config, assignment);

  const auto summary = Train(config, out);
  const auto& test = summary.test;
  const auto& popularity = summary.popularity_test;
  out << "\nTest metrics on the synthetic dataset (" << WithThousands(dataset.num_users()) << " users, "
      << WithThousands(dataset.num_items()) << " items; full ranking):\n\n"
      << "| method                 |  HR@10  | NDCG@10 |\n"
      << "|------------------------|---------|---------|\n"
      << Row("IISAN (cached)", test.hr(10), test.ndcg(10))
      << Row("popularity", popularity.hr(10), popularity.ndcg(10))
      << "\nrun directory: " << (std::filesystem::path(config.run_root) / config.name).string() << "\n";
}

}  // namespace iisan::launcher
