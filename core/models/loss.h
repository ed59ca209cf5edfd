// The training objective of IISAN.md §3.5: in-batch softmax cross-entropy with logQ
// (popularity) correction.
#pragma once

#include <torch/types.h>

namespace iisan::models {

// user_out: [B, L, d], the user encoder's outputs; item_emb: [B, L+1, d], the embeddings of
// item_ids: [B, L+1] int64 (left padded with 0); log_mask: [B, L], 1 = row (i, j) predicts
// item j+1 of user i; log_popularity: [N+1], log p(item) with entry 0 = 0.
// Every row scores all B(L+1) batch items: U Eᵀ - log p(column's item). Padding columns and,
// for user i's rows, every column holding one of user i's own ids are set to -1e4, except
// the row's positive column i(L+1)+j+1. Returns the mean cross-entropy over rows with
// log_mask = 1 (NaN when there are none), computed in at least fp32 and without host sync.
torch::Tensor InBatchSoftmaxLoss(const torch::Tensor& user_out, const torch::Tensor& item_emb,
                                 const torch::Tensor& item_ids, const torch::Tensor& log_mask,
                                 const torch::Tensor& log_popularity);

// The same objective split by users, for data-parallel training: user_out holds the rows of
// global users row_offset .. row_offset + b - 1 only ([b, L, d]), while item_emb, item_ids and
// log_mask describe the whole global batch (every rank's users, gathered). Returns this shard's
// summed row losses divided by the global number of predicting rows, so that the shards'
// values (and gradients) add up to InBatchSoftmaxLoss of the global batch.
torch::Tensor InBatchSoftmaxLossShard(const torch::Tensor& user_out, int64_t row_offset,
                                      const torch::Tensor& item_emb, const torch::Tensor& item_ids,
                                      const torch::Tensor& log_mask, const torch::Tensor& log_popularity);

}  // namespace iisan::models
