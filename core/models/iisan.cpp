// IISAN side network: SAN towers with scalar gates, linear heads and fusion; optimizer groups.
#include "core/models/iisan.h"

#include <stdexcept>
#include <string_view>

#include <torch/torch.h>

#include "core/models/transformer_blocks.h"

namespace iisan::models {
namespace {

// Module names, shared by the constructor and IisanParameterGroup.
constexpr const char* kTextSan = "text_san";
constexpr const char* kImageSan = "image_san";
constexpr const char* kInterSan = "inter_san";
constexpr const char* kTextGates = "text_gates";
constexpr const char* kImageGates = "image_gates";
constexpr const char* kInterGates = "inter_gates";
constexpr const char* kFcBert = "fc_bert";
constexpr const char* kFcCv = "fc_cv";

constexpr double kSanInitStd = 0.01;

void RequirePositive(const char* field, double value) {
  if (!(value > 0)) {
    throw std::runtime_error(std::string("IisanConfig: field '") + field + "' must be positive, got " +
                                c10::str(value));
  }
}

}  // namespace

Modality ParseModality(const std::string& name) {
  if (name == "text") return Modality::kText;
  if (name == "image") return Modality::kImage;
  if (name == "text+image") return Modality::kTextImage;
  throw std::runtime_error("modality must be one of \"text\", \"image\", \"text+image\"; got \"" + name + "\"");
}

std::string ModalityName(Modality modality) {
  switch (modality) {
    case Modality::kText:
      return "text";
    case Modality::kImage:
      return "image";
    case Modality::kTextImage:
      return "text+image";
  }
  throw std::logic_error("ModalityName: unhandled Modality value");
}

SanTowers ParseSanTowers(const std::string& name) {
  if (name == "intra+inter") return SanTowers::kIntraInter;
  if (name == "intra") return SanTowers::kIntra;
  if (name == "inter") return SanTowers::kInter;
  throw std::runtime_error("SAN towers must be one of \"intra+inter\", \"intra\", \"inter\"; got \"" + name + "\"");
}

std::string SanTowersName(SanTowers towers) {
  switch (towers) {
    case SanTowers::kIntraInter:
      return "intra+inter";
    case SanTowers::kIntra:
      return "intra";
    case SanTowers::kInter:
      return "inter";
  }
  throw std::logic_error("SanTowersName: unhandled SanTowers value");
}

SanFusion ParseSanFusion(const std::string& name) {
  if (name == "gated") return SanFusion::kGated;
  if (name == "add") return SanFusion::kAdd;
  throw std::runtime_error("SAN fusion must be one of \"gated\", \"add\"; got \"" + name + "\"");
}

std::string SanFusionName(SanFusion fusion) {
  switch (fusion) {
    case SanFusion::kGated:
      return "gated";
    case SanFusion::kAdd:
      return "add";
  }
  throw std::logic_error("SanFusionName: unhandled SanFusion value");
}

TowerSchedule ParseTowerSchedule(const std::string& name) {
  if (name == "auto") return TowerSchedule::kAuto;
  if (name == "separate") return TowerSchedule::kSeparate;
  if (name == "stacked") return TowerSchedule::kStacked;
  throw std::runtime_error("tower schedule must be one of \"auto\", \"separate\", \"stacked\"; got \"" + name + "\"");
}

std::string TowerScheduleName(TowerSchedule schedule) {
  switch (schedule) {
    case TowerSchedule::kAuto:
      return "auto";
    case TowerSchedule::kSeparate:
      return "separate";
    case TowerSchedule::kStacked:
      return "stacked";
  }
  throw std::logic_error("TowerScheduleName: unhandled TowerSchedule value");
}

void IisanConfig::Validate() const {
  RequirePositive("hidden_size", static_cast<double>(hidden_size));
  RequirePositive("bottleneck", static_cast<double>(bottleneck));
  RequirePositive("embedding_dim", static_cast<double>(embedding_dim));
  RequirePositive("num_blocks", static_cast<double>(num_blocks));
  RequirePositive("gate_temperature", gate_temperature);
  if (towers == SanTowers::kInter && modality != Modality::kTextImage) {
    throw std::runtime_error("IisanConfig: field 'towers' is \"inter\" but field 'modality' is \"" +
                             ModalityName(modality) + "\"; the inter-modal tower reads both modalities (text+image)");
  }
}

SanBlockImpl::SanBlockImpl(int64_t hidden_size, int64_t bottleneck) {
  down_ = register_module("down", torch::nn::Linear(hidden_size, bottleneck));
  up_ = register_module("up", torch::nn::Linear(bottleneck, hidden_size));
  Reset();
}

void SanBlockImpl::Reset() {
  torch::NoGradGuard no_grad;
  for (auto* linear : {down_.get(), up_.get()}) {
    linear->weight.normal_(0.0, kSanInitStd);
    linear->bias.zero_();
  }
}

torch::Tensor SanBlockImpl::forward(const torch::Tensor& x) {
  return x + Dense(up_, torch::relu(Dense(down_, x)));
}

void ResetAdapters(torch::nn::Module& root) {
  root.apply([](torch::nn::Module& module) {
    if (auto* block = dynamic_cast<SanBlockImpl*>(&module)) block->Reset();
  });
}

IntraItemEncoderImpl::IntraItemEncoderImpl(Modality modality, int64_t text_hidden, int64_t image_hidden,
                                           int64_t embedding_dim)
    : modality_(modality) {
  int64_t fused = 0;
  if (modality != Modality::kText) {
    RequirePositive("image hidden size", static_cast<double>(image_hidden));
    cv_classifier_ = register_module("cv_classifier", torch::nn::Linear(image_hidden, embedding_dim));
    torch::NoGradGuard no_grad;
    torch::nn::init::xavier_normal_(cv_classifier_->weight);
    cv_classifier_->bias.zero_();
    fused += embedding_dim;
  }
  if (modality != Modality::kImage) {
    RequirePositive("text hidden size", static_cast<double>(text_hidden));
    bert_fc_ = register_module("bert_fc", torch::nn::Linear(text_hidden, embedding_dim));
    fused += embedding_dim;
  }
  com_dense_ = register_module("com_dense", torch::nn::Linear(fused, embedding_dim));
}

torch::Tensor IntraItemEncoderImpl::forward(const torch::Tensor& text_cls, const torch::Tensor& image_cls) {
  // Image first, as the reference concatenates (IISAN.md §3.2).
  std::vector<torch::Tensor> parts;
  if (cv_classifier_) parts.push_back(torch::gelu(Dense(cv_classifier_, image_cls.to(torch::kFloat32))));
  if (bert_fc_) parts.push_back(torch::gelu(Dense(bert_fc_, text_cls.to(torch::kFloat32))));
  return Dense(com_dense_, parts.size() == 1 ? parts[0] : torch::cat(parts, 1)).to(torch::kFloat32);
}

IisanItemEncoderImpl::IisanItemEncoderImpl(const IisanConfig& config)
    : config_(config),
      uses_text_(config.modality != Modality::kImage),
      uses_image_(config.modality != Modality::kText),
      text_tower_(uses_text_ && config.towers != SanTowers::kInter),
      image_tower_(uses_image_ && config.towers != SanTowers::kInter),
      inter_tower_(uses_text_ && uses_image_ && config.towers != SanTowers::kIntra) {
  config_.Validate();
  const int64_t hidden = config_.hidden_size;
  const int64_t dim = config_.embedding_dim;
  // Gates start at 0 and draw no random numbers, so leaving them out (kAdd) initialises every
  // other parameter as the gated model would.
  auto gates = [&](const char* name) {
    return config_.fusion == SanFusion::kGated ? register_parameter(name, torch::zeros({config_.num_blocks}))
                                               : torch::Tensor();
  };
  int64_t towers = 0;
  if (text_tower_) {
    text_gates_ = gates(kTextGates);
    text_san_ = RegisterSanTower(kTextSan);
    fc_bert_ = register_module(kFcBert, torch::nn::Linear(hidden, hidden));
    bert_pre_fc_ = register_module("bert_pre_fc", torch::nn::Linear(hidden, dim));
    ++towers;
  }
  if (image_tower_) {
    image_gates_ = gates(kImageGates);
    image_san_ = RegisterSanTower(kImageSan);
    fc_cv_ = register_module(kFcCv, torch::nn::Linear(hidden, hidden));
    cv_pre_fc_ = register_module("cv_pre_fc", torch::nn::Linear(hidden, dim));
    // The reference's replaced ViT classifier starts as xavier_normal / 0 (run.py lines 57-61).
    torch::NoGradGuard no_grad;
    torch::nn::init::xavier_normal_(cv_pre_fc_->weight);
    cv_pre_fc_->bias.zero_();
    ++towers;
  }
  if (inter_tower_) {
    inter_gates_ = gates(kInterGates);
    inter_san_ = RegisterSanTower(kInterSan);
    fc_mm_ = register_module("fc_mm", torch::nn::Linear(hidden, hidden));
    fc_mm_down_ = register_module("fc_mm_down", torch::nn::Linear(hidden, dim));
    ++towers;
  }
  // The fusion layer reads the heads present: Linear(3 dim -> dim) for the three towers,
  // 2 dim for the two intra towers, dim for the inter tower alone (the reference's com_dense
  // per --modality). With one modality there is no inter tower, so it sees a single head. The
  // reference's uni-modal runs use a different (GELU) item encoder (IISAN.md §3.2); keeping
  // com_dense keeps the uni-modal ablation a strict subset of IISAN.
  com_dense_ = register_module("com_dense", torch::nn::Linear(dim * towers, dim));
}

std::vector<SanBlock> IisanItemEncoderImpl::RegisterSanTower(const std::string& name) {
  auto list = register_module(name, torch::nn::ModuleList());
  std::vector<SanBlock> blocks;
  for (int64_t k = 0; k < config_.num_blocks; ++k) {
    blocks.emplace_back(config_.hidden_size, config_.bottleneck);
    list->push_back(blocks.back());
  }
  return blocks;
}

// Gated: h_k = SANB_k(g_k H_k + (1 - g_k) h_{k-1}), h_{-1} = 0: each gate blends the
// backbone's state into the tower's own running state. Without gates (kAdd, the reference's
// fusion_method="add"): h_k = SANB_k(H_k + h_{k-1}).
torch::Tensor IisanItemEncoderImpl::RunIntraTower(std::vector<SanBlock>& blocks,
                                                  const torch::Tensor& gate_logits,
                                                  const torch::Tensor& states) {
  const bool gated = gate_logits.defined();
  const auto gates = gated ? torch::sigmoid(gate_logits / config_.gate_temperature) : torch::Tensor();
  auto h = torch::zeros_like(states.select(1, 0));
  for (int64_t k = 0; k < config_.num_blocks; ++k) {
    if (gated) {
      const auto g = gates[k];
      h = blocks[k]->forward(g * states.select(1, k) + (1 - g) * h);
    } else {
      h = blocks[k]->forward(states.select(1, k) + h);
    }
  }
  return h;
}

// Gated: h_k = SANB_k(h_{k-1} + g_k V_k + (1 - g_k) T_k), h_{-1} = 0: here the gate mixes image
// against text backbone states, and the running state is added, not gated (IISAN.md §9.4).
// Without gates (kAdd): h_k = SANB_k(h_{k-1} + V_k + T_k).
torch::Tensor IisanItemEncoderImpl::RunInterTower(const torch::Tensor& text_states,
                                                  const torch::Tensor& image_states) {
  const bool gated = inter_gates_.defined();
  const auto gates = gated ? torch::sigmoid(inter_gates_ / config_.gate_temperature) : torch::Tensor();
  auto h = torch::zeros_like(text_states.select(1, 0));
  for (int64_t k = 0; k < config_.num_blocks; ++k) {
    if (gated) {
      const auto g = gates[k];
      h = inter_san_[k]->forward(h + g * image_states.select(1, k) + (1 - g) * text_states.select(1, k));
    } else {
      h = inter_san_[k]->forward(h + image_states.select(1, k) + text_states.select(1, k));
    }
  }
  return h;
}

void IisanItemEncoderImpl::CheckStates(const torch::Tensor& states, const char* argument) const {
  const bool ok = states.defined() && states.dim() == 3 && states.size(1) == config_.num_blocks &&
                  states.size(2) == config_.hidden_size && states.is_floating_point();
  if (!ok) {
    throw std::runtime_error(
        std::string("IisanItemEncoder::forward: ") + argument + " must be a floating tensor [N, " +
        std::to_string(config_.num_blocks) + ", " + std::to_string(config_.hidden_size) + "] for modality \"" +
        ModalityName(config_.modality) + "\", got " +
        (states.defined() ? std::string(c10::toString(states.scalar_type())) + " " + c10::str(states.sizes())
                          : std::string("an undefined tensor")) +
        "; check the cache's kept layers and hidden size against the IISAN config");
  }
}

torch::Tensor IisanItemEncoderImpl::forward(const torch::Tensor& text_states, const torch::Tensor& image_states) {
  if (uses_text_) CheckStates(text_states, "text_states");
  if (uses_image_) CheckStates(image_states, "image_states");
  if (uses_text_ && uses_image_ && text_states.size(0) != image_states.size(0)) {
    throw std::runtime_error("IisanItemEncoder::forward: text_states and image_states hold " +
                                std::to_string(text_states.size(0)) + " and " + std::to_string(image_states.size(0)) +
                                " items; they must describe the same items");
  }
  // A cache may hold bf16 or fp16 states; the side network computes in its own dtype.
  const auto dtype = com_dense_->weight.scalar_type();
  const bool on_gpu = (uses_text_ ? text_states : image_states).is_cuda();
  if (config_.schedule == TowerSchedule::kStacked || (config_.schedule == TowerSchedule::kAuto && on_gpu)) {
    return ForwardStacked(uses_text_ ? text_states : torch::Tensor(), uses_image_ ? image_states : torch::Tensor(),
                          dtype);
  }
  const auto text = uses_text_ ? text_states.to(dtype) : torch::Tensor();
  const auto image = uses_image_ ? image_states.to(dtype) : torch::Tensor();
  // Concatenated in the reference's order: image, text, inter (model.py line 69).
  std::vector<torch::Tensor> heads;
  if (image_tower_) {
    heads.push_back(Dense(cv_pre_fc_, Dense(fc_cv_, RunIntraTower(image_san_, image_gates_, image))));
  }
  if (text_tower_) {
    heads.push_back(Dense(bert_pre_fc_, Dense(fc_bert_, RunIntraTower(text_san_, text_gates_, text))));
  }
  if (inter_tower_) {
    heads.push_back(Dense(fc_mm_down_, Dense(fc_mm_, RunInterTower(text, image))));
  }
  return Dense(com_dense_, torch::cat(heads, 1));
}

// The towers present, in the reference's head order (image, text, inter), run together. Every
// tower's block k reads x_k = a_k h_{k-1} + b_k T_k + c_k V_k with per-tower coefficients:
//   image intra: a = 1 - g, b = 0,     c = g        (kAdd: 1, 0, 1)
//   text intra:  a = 1 - g, b = g,     c = 0        (kAdd: 1, 1, 0)
//   inter:       a = 1,     b = 1 - g, c = g        (kAdd: 1, 1, 1)
// which is RunIntraTower's and RunInterTower's input. Each block is one addcmul, two baddbmm, a
// relu and an add for all towers together (the state terms b_k T_k + c_k V_k: see below).
torch::Tensor IisanItemEncoderImpl::ForwardStacked(const torch::Tensor& text, const torch::Tensor& image,
                                                   torch::ScalarType dtype) {
  const int64_t blocks = config_.num_blocks;
  const auto& reference = uses_text_ ? text : image;
  const auto options = reference.options().dtype(dtype);
  const auto ones = torch::ones({blocks}, options);
  const auto zeros = torch::zeros({blocks}, options);
  auto gate = [&](const torch::Tensor& logits) { return torch::sigmoid(logits / config_.gate_temperature); };
  std::vector<torch::Tensor> a, b, c;  // per tower, [K] each
  std::vector<std::vector<SanBlock>*> towers;
  std::vector<std::pair<torch::nn::Linear, torch::nn::Linear>> heads;
  const bool gated = config_.fusion == SanFusion::kGated;
  if (image_tower_) {
    const auto g = gated ? gate(image_gates_) : ones;
    a.push_back(gated ? 1 - g : ones), b.push_back(zeros), c.push_back(g);
    towers.push_back(&image_san_), heads.emplace_back(fc_cv_, cv_pre_fc_);
  }
  if (text_tower_) {
    const auto g = gated ? gate(text_gates_) : ones;
    a.push_back(gated ? 1 - g : ones), b.push_back(g), c.push_back(zeros);
    towers.push_back(&text_san_), heads.emplace_back(fc_bert_, bert_pre_fc_);
  }
  if (inter_tower_) {
    const auto g = gated ? gate(inter_gates_) : ones;
    a.push_back(ones), b.push_back(gated ? 1 - g : ones), c.push_back(g);
    towers.push_back(&inter_san_), heads.emplace_back(fc_mm_, fc_mm_down_);
  }
  const int64_t t = static_cast<int64_t>(towers.size());
  // [K, t, 1, 1] coefficients; the states as [K, 1, N, H].
  auto coefficient = [&](const std::vector<torch::Tensor>& per_tower) {
    return torch::stack(per_tower, 1).view({blocks, t, 1, 1});
  };
  const auto text_coefficient = coefficient(b), image_coefficient = coefficient(c);
  // Per-block pieces of stacked tensors are taken with unbind, not indexing: the backward of K
  // indexings is K zero-filled [K, ...] buffers summed into one (2K kernels), unbind's is one stack.
  const auto carry = coefficient(a).unbind(0);
  // Training (autograd on): the state terms of all blocks at once, [K, t, N, H]: the s states
  // present laid out [K, s, N, H] in `dtype` by the copies that convert them, then one multiply
  // per state (contiguous, vectorised). Their backward is a multiply and a reduction per state for
  // the coefficients' gradient (the states need none). Not a [K, t, s] x [K, s, N * H] bmm: its
  // backward is a GEMM with a reduction over N * H that cuBLAS ran as one gemv-like kernel of
  // 5.2 ms, 70 % of the step on the H200 (experiments/results/efficiency-h200.md, run G).
  // Without autograd (the item table, thousands of items a chunk) block by block instead, so
  // that no [K, t, N, H] buffer is held.
  std::vector<torch::Tensor> mixed;
  if (torch::GradMode::is_enabled()) {
    const int64_t n = reference.size(0), hidden = reference.size(2);
    std::vector<torch::Tensor> coefficients, states;
    if (uses_text_) coefficients.push_back(text_coefficient), states.push_back(text);
    if (uses_image_) coefficients.push_back(image_coefficient), states.push_back(image);
    const int64_t s = static_cast<int64_t>(states.size());
    auto laid_out = torch::empty({s, blocks, 1, n, hidden}, options);
    {
      torch::NoGradGuard no_grad;  // cached states are inputs, never trained
      for (int64_t j = 0; j < s; ++j) {
        laid_out[j].select(1, 0).copy_(states[static_cast<size_t>(j)].transpose(0, 1));
      }
    }
    torch::Tensor all;
    for (int64_t j = 0; j < s; ++j) {
      const auto& coefficient = coefficients[static_cast<size_t>(j)];  // [K, t, 1, 1]
      all = all.defined() ? torch::addcmul(all, coefficient, laid_out[j]) : coefficient * laid_out[j];
    }
    mixed = all.unbind(0);
  }
  auto state_term = [&](int64_t k) {
    if (!mixed.empty()) return mixed[static_cast<size_t>(k)];
    torch::Tensor term;
    if (uses_text_) term = text_coefficient[k] * text.select(1, k).to(dtype).unsqueeze(0);
    if (uses_image_) {
      const auto state = image.select(1, k).to(dtype).unsqueeze(0);
      term = term.defined() ? torch::addcmul(term, image_coefficient[k], state) : image_coefficient[k] * state;
    }
    return term;
  };
  // Every tower's block weights stacked once per call, [K, t, ...], and unbound into K blocks.
  auto stacked = [&](auto&& pick) {
    std::vector<torch::Tensor> per_block;
    per_block.reserve(static_cast<size_t>(blocks * t));
    for (int64_t k = 0; k < blocks; ++k) {
      for (auto* tower : towers) per_block.push_back(pick((*tower)[k]));
    }
    const auto flat = torch::stack(per_block, 0);
    auto sizes = flat.sizes().vec();
    sizes[0] = t;
    sizes.insert(sizes.begin(), blocks);
    return flat.view(sizes).unbind(0);
  };
  const auto down_w = stacked([](const SanBlock& s) { return s->down()->weight.t(); });  // K x [t, H, B]
  const auto down_b = stacked([](const SanBlock& s) { return s->down()->bias.unsqueeze(0); });  // K x [t, 1, B]
  const auto up_w = stacked([](const SanBlock& s) { return s->up()->weight.t(); });  // K x [t, B, H]
  const auto up_b = stacked([](const SanBlock& s) { return s->up()->bias.unsqueeze(0); });  // K x [t, 1, H]
  torch::Tensor h;  // [t, N, H]; h_{-1} = 0
  for (int64_t k = 0; k < blocks; ++k) {
    const auto i = static_cast<size_t>(k);
    const auto x = h.defined() ? torch::addcmul(state_term(k), carry[i], h) : state_term(k);
    const auto inner = torch::relu(torch::baddbmm(down_b[i], x, down_w[i]));
    h = x + torch::baddbmm(up_b[i], inner, up_w[i]);
  }
  // Heads: H -> H -> embedding_dim per tower, then [N, t * dim] in tower order.
  std::vector<torch::Tensor> w1, b1, w2, b2;
  for (auto& [first, second] : heads) {
    w1.push_back(first->weight.t()), b1.push_back(first->bias.unsqueeze(0));
    w2.push_back(second->weight.t()), b2.push_back(second->bias.unsqueeze(0));
  }
  const auto hidden = torch::baddbmm(torch::stack(b1), h, torch::stack(w1));
  const auto out = torch::baddbmm(torch::stack(b2), hidden, torch::stack(w2));  // [t, N, dim]
  return Dense(com_dense_, out.transpose(0, 1).reshape({out.size(1), -1}));
}

OptimizerGroup IisanParameterGroup(const std::string& name) {
  std::string_view rest = name;
  while (!rest.empty()) {
    const auto dot = rest.find('.');
    const auto component = rest.substr(0, dot);
    if (component == kTextSan) return OptimizerGroup::kAdapterText;
    if (component == kImageSan || component == kInterSan) return OptimizerGroup::kAdapterImage;
    if (component == kFcCv || component == kImageGates) return OptimizerGroup::kImage;
    if (component == kFcBert) return OptimizerGroup::kText;
    rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
  }
  return OptimizerGroup::kRecsys;
}

}  // namespace iisan::models
