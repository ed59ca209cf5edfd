// Cached IISAN forward passes for training and evaluation.
#include "core/train/recommender.h"

#include <torch/torch.h>

#include "core/models/loss.h"

namespace iisan::train {

int64_t ItemStates::num_rows() const {
  return text.defined() ? text.size(0) : image.size(0);
}

ItemStates ItemStates::To(const torch::Device& device) const {
  return {text.defined() ? text.to(device) : text, image.defined() ? image.to(device) : image};
}

IisanRecommenderImpl::IisanRecommenderImpl(const models::IisanConfig& item_config,
                                           const models::UserEncoderConfig& user_config) {
  item_encoder = register_module("item_encoder", models::IisanItemEncoder(item_config));
  user_encoder = register_module("user_encoder", models::UserEncoder(user_config));
}

torch::Tensor IisanRecommenderImpl::EmbedItems(const torch::Tensor& ids, const ItemStates& states) {
  auto gather = [&](const torch::Tensor& table) {
    return table.defined() ? table.index_select(0, ids) : torch::Tensor();
  };
  return item_encoder->forward(gather(states.text), gather(states.image));
}

torch::Tensor IisanRecommenderImpl::Loss(const SequenceBatch& batch, const ItemStates& states,
                                         const torch::Tensor& log_popularity) {
  const auto flat_ids = batch.item_ids.reshape({-1});
  // Each distinct item (padding included) goes through the side network once.
  auto [unique_ids, inverse] = at::_unique(flat_ids, /*sorted=*/true, /*return_inverse=*/true);
  auto embeddings = EmbedItems(unique_ids, states).index_select(0, inverse);
  const int64_t batch_size = batch.item_ids.size(0);
  const int64_t seq_len = batch.item_ids.size(1);
  embeddings = embeddings.view({batch_size, seq_len, -1});
  const int64_t inputs = seq_len - 1;
  auto user_out = user_encoder->forward(embeddings.narrow(1, 0, inputs), batch.log_mask);
  return models::InBatchSoftmaxLoss(user_out, embeddings, batch.item_ids, batch.log_mask, log_popularity);
}

torch::Tensor IisanRecommenderImpl::ItemTable(const ItemStates& states, int64_t chunk) {
  torch::NoGradGuard no_grad;
  const int64_t rows = states.num_rows();
  const auto device = states.text.defined() ? states.text.device() : states.image.device();
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < rows; start += chunk) {
    const int64_t end = std::min(rows, start + chunk);
    parts.push_back(EmbedItems(torch::arange(start, end, torch::TensorOptions().dtype(torch::kInt64).device(device)), states));
  }
  return torch::cat(parts, 0);
}

torch::Tensor IisanRecommenderImpl::UserVectors(const torch::Tensor& history_ids, const torch::Tensor& item_table) {
  torch::NoGradGuard no_grad;
  auto embeddings = item_table.index_select(0, history_ids.reshape({-1}))
                        .view({history_ids.size(0), history_ids.size(1), -1});
  auto log_mask = (history_ids != 0).to(item_table.scalar_type());
  auto out = user_encoder->forward(embeddings, log_mask);
  return out.select(1, history_ids.size(1) - 1);
}

SequenceBatch MakeSequenceBatch(const std::vector<std::vector<int32_t>>& sequences, int64_t max_len) {
  const int64_t batch_size = static_cast<int64_t>(sequences.size());
  auto ids = torch::zeros({batch_size, max_len + 1}, torch::kInt64);
  auto mask = torch::zeros({batch_size, max_len}, torch::kFloat32);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<float, 2>();
  for (int64_t b = 0; b < batch_size; ++b) {
    const auto& seq = sequences[b];
    const int64_t n = static_cast<int64_t>(seq.size());
    if (n > max_len + 1 || n < 2) {
      throw std::invalid_argument("MakeSequenceBatch: a training sequence needs 2.." +
                                  std::to_string(max_len + 1) + " items, got " + std::to_string(n));
    }
    const int64_t pad = max_len + 1 - n;
    for (int64_t k = 0; k < n; ++k) ids_a[b][pad + k] = seq[k];
    for (int64_t k = pad; k < max_len; ++k) mask_a[b][k] = 1.0f;
  }
  return {ids, mask};
}

}  // namespace iisan::train
