// In-batch softmax loss with logQ correction, vectorised over the whole batch.
#include "core/models/loss.h"

#include <stdexcept>
#include <string>

#include <torch/torch.h>

namespace iisan::models {
namespace {

constexpr double kMaskedLogit = -1e4;

[[noreturn]] void ThrowShape(const std::string& what, const torch::Tensor& got) {
  throw std::runtime_error("InBatchSoftmaxLoss: " + what + ", got " +
                              (got.defined() ? c10::str(got.sizes()) : std::string("an undefined tensor")));
}

}  // namespace

torch::Tensor InBatchSoftmaxLoss(const torch::Tensor& user_out, const torch::Tensor& item_emb,
                                 const torch::Tensor& item_ids, const torch::Tensor& log_mask,
                                 const torch::Tensor& log_popularity) {
  if (!log_mask.defined() || log_mask.dim() != 2) ThrowShape("log_mask must be [B, L]", log_mask);
  if (!user_out.defined() || user_out.dim() != 3 || user_out.size(0) != log_mask.size(0)) {
    ThrowShape("user_out must be [B, L, d] with [B, L] = " + c10::str(log_mask.sizes()), user_out);
  }
  return InBatchSoftmaxLossShard(user_out, 0, item_emb, item_ids, log_mask, log_popularity);
}

torch::Tensor InBatchSoftmaxLossShard(const torch::Tensor& user_out, int64_t row_offset,
                                      const torch::Tensor& item_emb, const torch::Tensor& item_ids,
                                      const torch::Tensor& log_mask, const torch::Tensor& log_popularity) {
  if (!log_mask.defined() || log_mask.dim() != 2) ThrowShape("log_mask must be [B, L]", log_mask);
  const int64_t batch = log_mask.size(0);
  const int64_t length = log_mask.size(1);
  const int64_t columns_per_user = length + 1;
  if (!user_out.defined() || user_out.dim() != 3 || user_out.size(1) != length || row_offset < 0 ||
      row_offset + user_out.size(0) > batch) {
    ThrowShape("user_out must be [b, L, d], rows " + std::to_string(row_offset) + ".. of the global batch " +
                   c10::str(log_mask.sizes()),
               user_out);
  }
  const int64_t rows = user_out.size(0);
  const int64_t dim = user_out.size(2);
  if (!item_emb.defined() || item_emb.dim() != 3 || item_emb.size(0) != batch ||
      item_emb.size(1) != columns_per_user || item_emb.size(2) != dim) {
    ThrowShape("item_emb must be [B, L+1, d] = [" + std::to_string(batch) + ", " + std::to_string(columns_per_user) +
                   ", " + std::to_string(dim) + "]",
               item_emb);
  }
  if (!item_ids.defined() || item_ids.dim() != 2 || item_ids.size(0) != batch ||
      item_ids.size(1) != columns_per_user || item_ids.scalar_type() != torch::kInt64) {
    ThrowShape("item_ids must be int64 [B, L+1] = [" + std::to_string(batch) + ", " +
                   std::to_string(columns_per_user) + "]",
               item_ids);
  }
  if (!log_popularity.defined() || log_popularity.dim() != 1) {
    ThrowShape("log_popularity must be [N+1]", log_popularity);
  }

  const auto flat_ids = item_ids.reshape({-1});  // [C], C = B(L+1) columns
  const auto logit_dtype = at::promote_types(user_out.scalar_type(), torch::kFloat32);
  auto logits = torch::matmul(user_out.reshape({rows * length, dim}), item_emb.reshape({-1, dim}).t())
                    .to(logit_dtype);  // [R, C], R = b·L rows
  logits = logits - log_popularity.index_select(0, flat_ids).to(logit_dtype).unsqueeze(0);

  const auto device = logits.device();
  const auto long_options = torch::TensorOptions().dtype(torch::kInt64).device(device);
  // Row (i, j) of global user i -> its positive column i(L+1) + j + 1.
  const auto labels = (torch::arange(row_offset, row_offset + rows, long_options).unsqueeze(1) * columns_per_user +
                       torch::arange(length, long_options).unsqueeze(0) + 1)
                          .reshape({-1});  // [R]
  const auto is_label = torch::arange(batch * columns_per_user, long_options).unsqueeze(0) == labels.unsqueeze(1);

  // Padding columns: those holding the padding item 0 (left padding of real users, every
  // column of an all-zero padded row). Not the input mask: a padded row's last column would
  // pass it and become a spurious negative for users whose ids contain no 0.
  const auto column_is_padding = (flat_ids == 0).reshape({1, -1});
  // own_item[i, c]: column c holds an id that occurs among user i's L+1 ids; each of user i's
  // L rows inherits that row of the mask.
  const auto own_item =
      (item_ids.narrow(0, row_offset, rows).unsqueeze(2) == flat_ids.view({1, 1, -1})).any(1);  // [b, C]
  const auto own_item_rows = own_item.unsqueeze(1).expand({rows, length, -1}).reshape({rows * length, -1});
  const auto masked = own_item_rows.logical_and(is_label.logical_not()).logical_or(column_is_padding);
  logits = logits.masked_fill(masked, kMaskedLogit);

  // Mean over the rows that predict a real item, as a weighted sum so that no boolean
  // indexing (and no host synchronisation) is needed.
  const auto row_losses = torch::logsumexp(logits, 1) - logits.gather(1, labels.unsqueeze(1)).squeeze(1);
  const auto weights = (log_mask.narrow(0, row_offset, rows).reshape({-1}) != 0).to(logit_dtype);
  const auto total_rows = (log_mask != 0).sum().to(logit_dtype);
  return (row_losses * weights).sum() / total_rows;
}

}  // namespace iisan::models
