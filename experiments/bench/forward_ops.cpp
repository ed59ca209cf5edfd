// Where a frozen backbone's forward spends its time on a GPU: the whole BERT and ViT [CLS]
// forward (eager and as a CUDA graph) at several batch sizes, and each operator of one
// encoder layer timed alone at one batch size (LayerNorm, the Q/K/V projections separately
// and fused, attention through SDPA and written out, the output projection, the residual add,
// the MLP's two projections and its GELU), with the dense-FLOP rate of the matmuls and the
// bandwidth of the element-wise operators. Prints one JSON object. Random weights.
//
//   iisan_forward_ops --text-config DIR --image-config DIR [--device cuda] [--dtype bfloat16]
#include <chrono>
#include <functional>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/models/backbone_config.h"
#include "core/models/bert.h"
#include "core/models/vit.h"
#include "core/train/cuda_graph.h"
#include "core/train/device_stats.h"

namespace {

using iisan::train::SynchronizeDevice;

// Seconds per call of `body`, after `warmup` calls, averaged over `iterations`.
double SecondsPerCall(const torch::Device& device, const std::function<void()>& body, int iterations, int warmup = 3) {
  for (int i = 0; i < warmup; ++i) body();
  SynchronizeDevice(device);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) body();
  SynchronizeDevice(device);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iterations;
}

// Per-operator timing of one encoder layer's pieces at `tokens` tokens of width `hidden`.
nlohmann::json LayerOps(const torch::Device& device, torch::ScalarType dtype, int64_t batch, int64_t length,
                        int64_t hidden, int64_t heads, int64_t intermediate, int iterations) {
  const auto options = torch::TensorOptions().device(device).dtype(dtype);
  const int64_t tokens = batch * length;
  const auto x = torch::randn({batch, length, hidden}, options);
  const auto w = torch::randn({hidden, hidden}, options) * 0.02;
  const auto w3 = torch::randn({3 * hidden, hidden}, options) * 0.02;
  const auto w1 = torch::randn({intermediate, hidden}, options) * 0.02;
  const auto w2 = torch::randn({hidden, intermediate}, options) * 0.02;
  const auto b = torch::zeros({hidden}, options), b3 = torch::zeros({3 * hidden}, options);
  const auto b1 = torch::zeros({intermediate}, options);
  const auto gamma = torch::ones({hidden}, options), beta = torch::zeros({hidden}, options);
  const auto inner = torch::randn({batch, length, intermediate}, options);
  const int64_t head_dim = hidden / heads;
  const auto heads_view = [&](const torch::Tensor& t) { return t.view({batch, length, heads, head_dim}).transpose(1, 2); };
  const auto q = heads_view(torch::randn({batch, length, hidden}, options));
  const auto k = heads_view(torch::randn({batch, length, hidden}, options));
  const auto v = heads_view(torch::randn({batch, length, hidden}, options));
  const auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  const double unit_bytes = static_cast<double>(tokens * hidden) * x.element_size();

  nlohmann::json out = {{"batch", batch}, {"length", length}, {"tokens", tokens}};
  auto matmul = [&](const std::string& name, double flops, const std::function<void()>& body) {
    const double s = SecondsPerCall(device, body, iterations);
    out["ops"][name] = {{"ms", s * 1e3}, {"tflops", flops / s / 1e12}};
  };
  auto memory = [&](const std::string& name, double units, const std::function<void()>& body) {
    const double s = SecondsPerCall(device, body, iterations);
    out["ops"][name] = {{"ms", s * 1e3}, {"gb_per_s", units * unit_bytes / s / 1e9}};
  };
  torch::NoGradGuard no_grad;
  const double t = static_cast<double>(tokens), h = static_cast<double>(hidden), i = static_cast<double>(intermediate);
  memory("layer_norm", 2, [&] { at::layer_norm(x, {hidden}, gamma, beta, 1e-12); });
  // LibTorch's functional linear adds a 3-D input's bias in a kernel of its own; at::linear (what
  // the models call, through models::Dense) folds it into the matmul.
  matmul("libtorch_functional_linear", 2 * t * h * h, [&] { torch::nn::functional::linear(x, w, b); });
  matmul("q_or_k_or_v_linear", 2 * t * h * h, [&] { at::linear(x, w, b); });
  matmul("qkv_fused_linear", 6 * t * h * h, [&] { at::linear(x, w3, b3); });
#if TORCH_VERSION_MAJOR >= 2
  const double attention_flops = 4.0 * batch * heads * length * length * head_dim;
  matmul("sdpa_head_views", attention_flops, [&] { at::scaled_dot_product_attention(q, k, v); });
  matmul("sdpa_contiguous", attention_flops, [&] { at::scaled_dot_product_attention(qc, kc, vc); });
  const auto mask = torch::zeros({batch, 1, 1, length}, options);
  matmul("sdpa_with_additive_mask", attention_flops, [&] { at::scaled_dot_product_attention(q, k, v, mask); });
  matmul("attention_written_out", attention_flops, [&] {
    auto scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(head_dim));
    torch::matmul(torch::softmax(scores, -1), v);
  });
  memory("context_transpose_reshape", 2, [&] {
    at::scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape({batch, length, hidden});
  });
#endif
  matmul("output_linear", 2 * t * h * h, [&] { at::linear(x, w, b); });
  memory("residual_add", 3, [&] { x + x; });
  matmul("mlp_fc1_linear", 2 * t * h * i, [&] { at::linear(x, w1, b1); });
  memory("gelu_erf", 2 * i / h, [&] { torch::gelu(inner); });
  memory("gelu_tanh", 2 * i / h, [&] { torch::gelu(inner, "tanh"); });
  matmul("mlp_fc2_linear", 2 * t * h * i, [&] { at::linear(inner, w2, b); });
  matmul("square_matmul_8192", 2.0 * 8192 * 8192 * 8192, [&] {
    static const auto a = torch::randn({8192, 8192}, options);
    torch::matmul(a, a);
  });
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"per-operator timing of the frozen backbones' forward"};
  std::string text_config, image_config, device_name = "cuda", dtype_name = "bfloat16";
  std::vector<int64_t> batches{128, 256, 512, 1024};
  int64_t op_batch = 512;
  int iterations = 10;
  app.add_option("--text-config", text_config, "BERT folder with config.json")->required();
  app.add_option("--image-config", image_config, "ViT folder with config.json")->required();
  app.add_option("--device", device_name);
  app.add_option("--dtype", dtype_name, "bfloat16 or float32");
  app.add_option("--batches", batches, "whole-forward batch sizes");
  app.add_option("--op-batch", op_batch, "batch size of the per-operator timings");
  app.add_option("--iterations", iterations);
  CLI11_PARSE(app, argc, argv);
  const torch::Device device(device_name);
  const auto dtype = dtype_name == "float32" ? torch::kFloat32 : torch::kBFloat16;
  torch::NoGradGuard no_grad;

  const auto bert_config = iisan::models::BertConfig::FromJsonFile(text_config + "/config.json");
  const auto vit_config = iisan::models::ViTConfig::FromJsonFile(image_config + "/config.json");
  iisan::models::BertModel bert(bert_config);
  iisan::models::ViTModel vit(vit_config);
  bert->eval();
  vit->eval();
  bert->to(device, dtype);
  vit->to(device, dtype);
  const int64_t text_length = 30;

  nlohmann::json report = {{"device", device.str()}, {"dtype", dtype_name}, {"torch", TORCH_VERSION}};
  for (int64_t batch : batches) {
    const auto ids = torch::randint(1000, 30000, {batch, text_length}, torch::TensorOptions().device(device).dtype(torch::kInt64));
    const auto mask = torch::ones_like(ids);
    const auto pixels = torch::randn({batch, 3, vit_config.image_size, vit_config.image_size},
                                     torch::TensorOptions().device(device).dtype(dtype));
    auto text = [&] { bert->ClsStates(ids, mask); };
    auto image = [&] { vit->ClsStates(pixels); };
    nlohmann::json row = {{"batch", batch}};
    row["text_eager_ms"] = SecondsPerCall(device, text, iterations) * 1e3;
    row["image_eager_ms"] = SecondsPerCall(device, image, iterations) * 1e3;
    if (device.is_cuda() && iisan::train::CudaGraphStep::Supported()) {
      for (auto [name, body] : {std::pair{"text_graph_ms", std::function<void()>(text)},
                                std::pair{"image_graph_ms", std::function<void()>(image)}}) {
        iisan::train::CudaGraphStep graph(device);
        graph.Warmup(body);
        graph.Capture(body);
        row[name] = SecondsPerCall(device, [&] { graph.Replay(); }, iterations) * 1e3;
      }
    }
    report["whole_forward"].push_back(row);
    std::cerr << row.dump() << std::endl;
  }
  report["bert_layer_ops"] = LayerOps(device, dtype, op_batch, text_length, bert_config.hidden_size,
                                      bert_config.num_attention_heads, bert_config.intermediate_size, iterations);
  report["vit_layer_ops"] = LayerOps(device, dtype, op_batch, vit_config.num_patches() + 1, vit_config.hidden_size,
                                     vit_config.num_attention_heads, vit_config.intermediate_size, iterations);
  std::cout << report.dump(2) << std::endl;
  return 0;
}
