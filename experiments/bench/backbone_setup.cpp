// Set-up cost of the frozen encoders, as the cache build pays it: constructing base-size BERT and
// ViT with our random init (no weights in the folder) against without it (WeightInit::kSkip, the
// path when a checkpoint overwrites every weight). CPU only; prints one JSON object.
//   iisan_backbone_setup --shared ../shared/data [--repeats 3]
#include <chrono>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/models/backbone_config.h"
#include "core/models/bert.h"
#include "core/models/vit.h"

int main(int argc, char** argv) {
  CLI::App app{"construction time of base BERT and ViT, with and without our random init"};
  std::string shared;
  int repeats = 3;
  app.add_option("--shared", shared, "folder with bert-base-uncased/ and vit-base-patch16-224/ configs")->required();
  app.add_option("--repeats", repeats)->check(CLI::Range(1, 100))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  using iisan::models::WeightInit;
  const std::filesystem::path root(shared);
  const auto bert_config = iisan::models::BertConfig::FromJsonFile((root / "bert-base-uncased/config.json").string());
  const auto vit_config = iisan::models::ViTConfig::FromJsonFile((root / "vit-base-patch16-224/config.json").string());
  auto seconds_since = [](std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  nlohmann::ordered_json result;
  result["threads"] = at::get_num_threads();
  for (const auto init : {WeightInit::kRandom, WeightInit::kSkip}) {
    double bert_best = 1e30, vit_best = 1e30;
    for (int r = 0; r < repeats; ++r) {
      auto start = std::chrono::steady_clock::now();
      iisan::models::BertModel bert(bert_config, iisan::models::PeftConfig{}, init);
      bert_best = std::min(bert_best, seconds_since(start));
      start = std::chrono::steady_clock::now();
      iisan::models::ViTModel vit(vit_config, iisan::models::PeftConfig{}, init);
      vit_best = std::min(vit_best, seconds_since(start));
    }
    const std::string name = init == WeightInit::kRandom ? "random_init" : "skip_init";
    result[name] = {{"bert_base_seconds", bert_best}, {"vit_base_seconds", vit_best}};
  }
  std::cout << result.dump(1) << std::endl;
  return 0;
}
