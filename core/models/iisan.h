// IISAN's side network, the trainable item encoder of IISAN.md §3.3/§4: intra-modal SANs for
// text and image, the inter-modal SAN, linear heads and the fusion layer, fed with K kept
// per-layer [CLS] states of each frozen backbone. Also the reference's optimizer groups (§6).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace iisan::models {

enum class Modality { kText, kImage, kTextImage };

// "text", "image" or "text+image"; anything else throws std::runtime_error naming the choices.
Modality ParseModality(const std::string& name);
std::string ModalityName(Modality modality);

// Which SAN towers the side network has: the paper's ablation of the reference's `--modality`
// (intra_inter, intra, inter; IISAN.md §7.2). kIntraInter and kIntra keep an intra-modal tower
// per modality present; kIntraInter and kInter keep the inter-modal tower when both are.
enum class SanTowers { kIntraInter, kIntra, kInter };

// "intra+inter", "intra" or "inter"; anything else throws std::runtime_error naming the choices.
SanTowers ParseSanTowers(const std::string& name);
std::string SanTowersName(SanTowers towers);

// How each SANB's input combines the backbone's state with the tower's running state: the
// reference's `fusion_method` (IISAN.md §3.3, §7.2). kGated: scalar gates g = sigmoid(w / T);
// kAdd: plain sums, no gate parameters (the reference's "add").
enum class SanFusion { kGated, kAdd };

// "gated" or "add"; anything else throws std::runtime_error naming the choices.
SanFusion ParseSanFusion(const std::string& name);
std::string SanFusionName(SanFusion fusion);

// How the side network runs its towers. kSeparate: one tower after the other, each SANB its
// own two matrix products (the reference's order of operations). kStacked: the towers present
// run side by side, block k of every tower in one batched product (baddbmm) over the towers'
// stacked weights, and the heads likewise: the same arithmetic in about a third of the kernels
// (a cached training step is bound by kernel launches, not by arithmetic); results agree to
// rounding. kAuto: kStacked when the states are on a GPU, kSeparate on the CPU, whose numbers
// therefore stay those of the reference order.
enum class TowerSchedule { kAuto, kSeparate, kStacked };

TowerSchedule ParseTowerSchedule(const std::string& name);
std::string TowerScheduleName(TowerSchedule schedule);

struct IisanConfig {
  int64_t hidden_size = 768;    // width of the backbones' hidden states and of every SANB
  int64_t bottleneck = 64;      // SANB inner width
  int64_t embedding_dim = 64;   // item embedding width (= the user encoder's width)
  int64_t num_blocks = 7;       // K: kept hidden states per modality, one SANB each
  Modality modality = Modality::kTextImage;
  SanTowers towers = SanTowers::kIntraInter;  // kInter needs modality kTextImage
  SanFusion fusion = SanFusion::kGated;
  double gate_temperature = 0.1;  // gate g = sigmoid(w / gate_temperature) (kGated)
  TowerSchedule schedule = TowerSchedule::kAuto;

  // Throws std::runtime_error naming the first bad field.
  void Validate() const;
};

// Side adapted network block: x + W_up ReLU(W_down x + b_down) + b_up. Weights start at
// N(0, 0.01²) and biases at 0, so a fresh block is close to the identity. The reference builds
// a dropout here but never applies it, so this block has none.
// Registered children: down, up.
class SanBlockImpl : public torch::nn::Module {
 public:
  SanBlockImpl(int64_t hidden_size, int64_t bottleneck);
  torch::Tensor forward(const torch::Tensor& x);
  // Back to the initial distribution (weights N(0, 0.01²), biases 0).
  void Reset();

  const torch::nn::Linear& down() const { return down_; }
  const torch::nn::Linear& up() const { return up_; }

 private:
  torch::nn::Linear down_{nullptr};
  torch::nn::Linear up_{nullptr};
};
TORCH_MODULE(SanBlock);

// Resets every SanBlock under `root` (e.g. Houlsby adapters after a backbone's own init).
void ResetAdapters(torch::nn::Module& root);

// Parameter names, k = 0..K-1 (towers of an absent modality, or left out by `towers`, are not
// built; neither are the gates under SanFusion::kAdd):
//   text_gates, image_gates, inter_gates                [K] gate logits w, initialised to 0
//   {text,image,inter}_san.<k>.{down,up}.{weight,bias}   SANBs
//   fc_bert, bert_pre_fc    text head  H -> H -> embedding_dim (the reference's fc_bert, title.fc)
//   fc_cv, cv_pre_fc        image head H -> H -> embedding_dim (fc_cv, the replaced ViT classifier)
//   fc_mm, fc_mm_down       inter head H -> H -> embedding_dim
//   com_dense               fusion of the concatenated heads (T towers) -> embedding_dim:
//                           Linear(T * embedding_dim -> embedding_dim), T = 3, 2 or 1
// The heads have no nonlinearity, as in the reference (IISAN.md §9.8).
class IisanItemEncoderImpl : public torch::nn::Module {
 public:
  explicit IisanItemEncoderImpl(const IisanConfig& config);

  // text_states, image_states: [N, K, H] floating (cast to the encoder's dtype), the kept
  // [CLS] states of N items, oldest layer first; pass an undefined tensor for a modality the
  // config does not use (a given one is ignored). Returns the item embeddings [N, embedding_dim].
  torch::Tensor forward(const torch::Tensor& text_states, const torch::Tensor& image_states);

  const IisanConfig& config() const { return config_; }

  // Overrides config().schedule (see TowerSchedule).
  void set_tower_schedule(TowerSchedule schedule) { config_.schedule = schedule; }

 private:
  std::vector<SanBlock> RegisterSanTower(const std::string& name);
  // text, image: the states as given (any floating dtype), converted to `dtype` as they are read.
  torch::Tensor ForwardStacked(const torch::Tensor& text, const torch::Tensor& image, torch::ScalarType dtype);
  torch::Tensor RunIntraTower(std::vector<SanBlock>& blocks, const torch::Tensor& gate_logits,
                              const torch::Tensor& states);
  torch::Tensor RunInterTower(const torch::Tensor& text_states, const torch::Tensor& image_states);
  void CheckStates(const torch::Tensor& states, const char* argument) const;

  IisanConfig config_;
  bool uses_text_;   // text states are read (by the text tower or the inter tower)
  bool uses_image_;  // image states are read
  bool text_tower_;
  bool image_tower_;
  bool inter_tower_;
  torch::Tensor text_gates_;
  torch::Tensor image_gates_;
  torch::Tensor inter_gates_;
  std::vector<SanBlock> text_san_;
  std::vector<SanBlock> image_san_;
  std::vector<SanBlock> inter_san_;
  torch::nn::Linear fc_bert_{nullptr};
  torch::nn::Linear bert_pre_fc_{nullptr};
  torch::nn::Linear fc_cv_{nullptr};
  torch::nn::Linear cv_pre_fc_{nullptr};
  torch::nn::Linear fc_mm_{nullptr};
  torch::nn::Linear fc_mm_down_{nullptr};
  torch::nn::Linear com_dense_{nullptr};
};
TORCH_MODULE(IisanItemEncoder);

// The item encoder of the baselines (FFT, Adapter, LoRA, BitFit; IISAN.md §3.2), on the last
// hidden state's [CLS] row of each live backbone: e_txt = GELU(bert_fc(text)),
// e_img = GELU(cv_classifier(image)) with the image row after ViT's final LayerNorm (the
// caller applies it), e = com_dense([e_img; e_txt]). bert_fc has PyTorch's default init,
// cv_classifier xavier_normal weights and zero bias (the reference's replaced ViT classifier).
// Parameter names: bert_fc.*, cv_classifier.*, com_dense.*.
class IntraItemEncoderImpl : public torch::nn::Module {
 public:
  IntraItemEncoderImpl(Modality modality, int64_t text_hidden, int64_t image_hidden, int64_t embedding_dim);

  // text_cls [N, text_hidden], image_cls [N, image_hidden]; an unused modality's tensor is
  // ignored. Returns [N, embedding_dim] in fp32.
  torch::Tensor forward(const torch::Tensor& text_cls, const torch::Tensor& image_cls);

 private:
  Modality modality_;
  torch::nn::Linear bert_fc_{nullptr};
  torch::nn::Linear cv_classifier_{nullptr};
  torch::nn::Linear com_dense_{nullptr};
};
TORCH_MODULE(IntraItemEncoder);

// Learning-rate groups of the reference trainer (IISAN.md §6).
enum class OptimizerGroup { kRecsys, kText, kImage, kAdapterText, kAdapterImage };

// The group the reference's name-matching rules effectively give an IISAN parameter:
// text SANBs -> kAdapterText; image and inter SANBs -> kAdapterImage; fc_cv and the image
// gates -> kImage; fc_bert -> kText; everything else (text and inter gates, fc_mm,
// fc_mm_down, cv_pre_fc, bert_pre_fc, com_dense, the user encoder) -> kRecsys. Matches whole
// dot-separated components of `name`, so a prefix such as "item_encoder." does not matter.
OptimizerGroup IisanParameterGroup(const std::string& name);

}  // namespace iisan::models
