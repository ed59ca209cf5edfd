// Backbone parity and throughput on a GPU: loads bert-base / vit-base folders saved by
// transformers (tools/h200_backbone_reference.py), checks that our encoders reproduce all 13
// hidden states of the reference inputs (fp32 with TF32 off, then bf16), and measures our bf16
// forward throughput at the batch sizes transformers was measured with. Prints one JSON object.
// With --profile-dir, also a per-kernel breakdown of each bf16 forward (the training profiles'
// format: <phase>.json and summary.txt), and the forwards' arithmetic rate (TFLOP/s) from their
// counted FLOPs, to set against the card's bf16 matmul rate.
#include <chrono>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/models/backbone_config.h"
#include "core/models/bert.h"
#include "core/models/hf_checkpoint.h"
#include "core/models/safetensors.h"
#include "core/models/vit.h"
#include "core/train/kernel_profile.h"

namespace {

using iisan::models::SafetensorsReader;

double RelativeError(const torch::Tensor& ours, const torch::Tensor& reference, const torch::Tensor& mask) {
  auto a = ours.to(torch::kCPU, torch::kFloat64);
  auto b = reference.to(torch::kFloat64);
  if (mask.defined()) {
    const auto keep = mask.unsqueeze(-1).to(torch::kBool);
    a = a.masked_select(keep);
    b = b.masked_select(keep);
  }
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

nlohmann::json CompareAll(const std::vector<torch::Tensor>& ours, const SafetensorsReader& reference,
                          const torch::Tensor& mask) {
  nlohmann::json errors = nlohmann::json::array();
  double worst = 0.0;
  for (size_t i = 0; i < ours.size(); ++i) {
    const double e = RelativeError(ours[i], reference.Tensor("hidden_state_" + std::to_string(i)), mask);
    errors.push_back(e);
    worst = std::max(worst, e);
  }
  return {{"hidden_states", ours.size()}, {"max_relative_error", worst}, {"per_state", errors}};
}

template <typename Forward>
double ItemsPerSecond(Forward&& forward, int64_t batch, int iterations) {
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 3; ++i) forward();
  torch::cuda::synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) forward();
  torch::cuda::synchronize();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(batch * iterations) / seconds;
}

// Multiply-add FLOPs of one item's encoder forward over `tokens` positions: the four attention
// projections and the two feed-forward matmuls of each layer, and attention's two products.
double EncoderFlops(int64_t hidden, int64_t intermediate, int64_t layers, int64_t tokens) {
  const double h = static_cast<double>(hidden), t = static_cast<double>(tokens);
  const double projections = 2.0 * t * (4.0 * h * h + 2.0 * h * static_cast<double>(intermediate));
  const double attention = 2.0 * 2.0 * t * t * h;
  return static_cast<double>(layers) * (projections + attention);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"backbone parity and bf16 throughput against transformers"};
  std::string dir;
  int64_t text_batch = 512, image_batch = 256;
  int iterations = 20;
  app.add_option("--dir", dir, "output folder of tools/h200_backbone_reference.py")->required();
  app.add_option("--text-batch", text_batch)->capture_default_str();
  app.add_option("--image-batch", image_batch)->capture_default_str();
  app.add_option("--iterations", iterations)->capture_default_str();
  std::string profile_dir;
  int profile_iterations = 5;
  app.add_option("--profile-dir", profile_dir, "also profile --profile-iterations bf16 forwards of each backbone "
                                               "and write the per-kernel breakdowns here");
  app.add_option("--profile-iterations", profile_iterations)->check(CLI::Range(1, 1000))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (!torch::cuda::is_available()) {
    std::cerr << "backbone_parity: needs a CUDA device\n";
    return 1;
  }
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  const torch::Device cuda(torch::kCUDA);
  const std::filesystem::path root(dir);
  nlohmann::json result;
  torch::NoGradGuard no_grad;

  iisan::models::BertModel bert(iisan::models::BertConfig::FromJsonFile((root / "bert-base/config.json").string()));
  iisan::models::LoadBertCheckpoint(bert, root / "bert-base");
  bert->eval();
  bert->to(cuda);
  const SafetensorsReader bert_ref(root / "bert_reference.safetensors");
  const auto ids = bert_ref.Tensor("input_ids").to(cuda);
  const auto mask = bert_ref.Tensor("attention_mask");
  result["bert_fp32"] = CompareAll(bert->forward(ids, mask.to(cuda)), bert_ref, mask);
  bert->to(torch::kBFloat16);
  result["bert_bf16"] = CompareAll(bert->forward(ids, mask.to(cuda)), bert_ref, mask);

  iisan::models::ViTModel vit(iisan::models::ViTConfig::FromJsonFile((root / "vit-base/config.json").string()));
  iisan::models::LoadViTCheckpoint(vit, root / "vit-base");
  vit->eval();
  vit->to(cuda);
  const SafetensorsReader vit_ref(root / "vit_reference.safetensors");
  const auto pixels = vit_ref.Tensor("pixel_values").to(cuda);
  result["vit_fp32"] = CompareAll(vit->forward(pixels), vit_ref, torch::Tensor());
  vit->to(torch::kBFloat16);
  result["vit_bf16"] = CompareAll(vit->forward(pixels.to(torch::kBFloat16)), vit_ref, torch::Tensor());

  const auto batch_ids = torch::randint(1000, 30000, {text_batch, 30}, torch::TensorOptions().dtype(torch::kInt64).device(cuda));
  const auto batch_mask = torch::ones({text_batch, 30}, batch_ids.options());
  result["ours_bf16_text_items_per_s"] = ItemsPerSecond([&] { return bert->forward(batch_ids, batch_mask); }, text_batch, iterations);
  const auto batch_pixels = torch::rand({image_batch, 3, 224, 224}, torch::TensorOptions().dtype(torch::kBFloat16).device(cuda));
  result["ours_bf16_image_items_per_s"] = ItemsPerSecond([&] { return vit->forward(batch_pixels); }, image_batch, iterations);
  result["text_batch"] = text_batch;
  result["image_batch"] = image_batch;
  // Arithmetic rates: BERT over 30 tokens, ViT over its patches and [CLS] (patch embedding
  // included), each at the measured items/s.
  const auto& bc = bert->config();
  const auto& vc = vit->config();
  const double bert_flops = EncoderFlops(bc.hidden_size, bc.intermediate_size, bc.num_hidden_layers, 30);
  const double patch_flops = 2.0 * static_cast<double>(vc.num_patches() * vc.num_channels * vc.patch_size *
                                                       vc.patch_size * vc.hidden_size);
  const double vit_flops =
      EncoderFlops(vc.hidden_size, vc.intermediate_size, vc.num_hidden_layers, vc.num_patches() + 1) + patch_flops;
  result["bert_gflop_per_item"] = bert_flops * 1e-9;
  result["vit_gflop_per_item"] = vit_flops * 1e-9;
  result["ours_bf16_text_tflops"] = bert_flops * result["ours_bf16_text_items_per_s"].get<double>() * 1e-12;
  result["ours_bf16_image_tflops"] = vit_flops * result["ours_bf16_image_items_per_s"].get<double>() * 1e-12;
  if (!profile_dir.empty()) {
    std::vector<iisan::train::KernelProfile> profiles;
    iisan::train::KernelProfiler profiler(cuda);
    auto profile = [&](const std::string& phase, int64_t batch, const auto& forward) {
      for (int i = 0; i < 2; ++i) forward();
      profiler.Start();
      for (int i = 0; i < profile_iterations; ++i) forward();
      auto window = profiler.Stop();
      window.phase = phase;
      window.step_engine = "eager";
      window.step_name = "bf16 forward of " + std::to_string(batch) + " items";
      window.steps = profile_iterations;
      profiles.push_back(std::move(window));
    };
    profile("bert_forward", text_batch, [&] { return bert->forward(batch_ids, batch_mask); });
    profile("vit_forward", image_batch, [&] { return vit->forward(batch_pixels); });
    iisan::train::WriteProfileFiles(profile_dir, profiles);
    result["profile_dir"] = profile_dir;
  }
  std::cout << result.dump(1) << std::endl;
  return 0;
}
