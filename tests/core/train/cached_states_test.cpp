// Cached IISAN's item tables on the device: kept in the dtype they come in (a bfloat16 cache
// stays bfloat16; the side network casts the rows it gathers), so that a run trains exactly as
// it did when the tables were cast to float32 at load; and only the tables of the modalities the
// model reads go to the device.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/models/param_count.h"
#include "core/train/trainer.h"
#include "tests/core/train/walk_problem.h"

namespace iisan::train {
namespace {

using testing::Problem;

// The walk problem's text IISAN, its states rounded to bfloat16 (what bf16 backbones hand the
// cache), prepared with them in `dtype`.
Recommender ModelWithStatesIn(const Problem& setup, torch::ScalarType dtype, const torch::Tensor& image = {}) {
  torch::manual_seed(0);
  ItemStates states{torch::randn({31, 3, 16}).to(torch::kBFloat16).to(dtype), image};
  states.text[0].zero_();
  RecommenderConfig config;
  config.method = Method::kIisan;
  config.modality = models::Modality::kText;
  config.side.hidden_size = 16;
  config.side.num_blocks = 3;
  config.side.modality = models::Modality::kText;
  config.user.dropout = 0.2;
  torch::manual_seed(1);
  Recommender model(config);
  model->Prepare(states, {}, setup.options.device);
  torch::manual_seed(setup.options.seed);
  return model;
}

TEST(CachedStatesTest, Bfloat16TablesTrainExactlyAsTablesCastToFloat32AtLoad) {
  const Problem setup;
  auto kept = ModelWithStatesIn(setup, torch::kBFloat16);
  auto cast = ModelWithStatesIn(setup, torch::kFloat32);  // the cast-at-load behaviour
  EXPECT_EQ(kept->item_states().text.scalar_type(), torch::kBFloat16) << "the table was cast on the way in";
  EXPECT_EQ(cast->item_states().text.scalar_type(), torch::kFloat32);

  // One step's loss and gradients, then whole runs: epoch losses, validation and test metrics,
  // and the trained weights, bit for bit.
  const auto batch = MakeSequenceBatch({{1, 2, 3, 4}, {5, 6, 7}, {8, 9, 10, 11, 12}}, 10);
  const auto log_popularity = torch::zeros({31});
  for (auto* model : {&kept, &cast}) (*model)->train();
  torch::manual_seed(3);
  const auto kept_loss = kept->Loss(batch, log_popularity);
  torch::manual_seed(3);
  const auto cast_loss = cast->Loss(batch, log_popularity);
  EXPECT_TRUE(torch::equal(kept_loss, cast_loss)) << kept_loss.item<float>() << " vs " << cast_loss.item<float>();
  kept_loss.backward();
  cast_loss.backward();
  const auto kept_params = models::TrainableParameters(*kept), cast_params = models::TrainableParameters(*cast);
  ASSERT_EQ(kept_params.size(), cast_params.size());
  for (size_t i = 0; i < kept_params.size(); ++i) {
    EXPECT_TRUE(torch::equal(kept_params[i].grad(), cast_params[i].grad())) << "gradient " << i;
  }

  kept = ModelWithStatesIn(setup, torch::kBFloat16);
  Trainer kept_trainer(setup.dataset, kept, setup.options);
  std::vector<EpochRecord> kept_epochs;
  const auto kept_result = kept_trainer.Fit([&](const EpochRecord& record) { kept_epochs.push_back(record); });
  cast = ModelWithStatesIn(setup, torch::kFloat32);
  Trainer cast_trainer(setup.dataset, cast, setup.options);
  std::vector<EpochRecord> cast_epochs;
  const auto cast_result = cast_trainer.Fit([&](const EpochRecord& record) { cast_epochs.push_back(record); });
  ASSERT_EQ(kept_epochs.size(), cast_epochs.size());
  for (size_t e = 0; e < kept_epochs.size(); ++e) {
    EXPECT_EQ(kept_epochs[e].train_loss, cast_epochs[e].train_loss) << "epoch " << e + 1;
    EXPECT_EQ(kept_epochs[e].valid.ToJson(), cast_epochs[e].valid.ToJson()) << "epoch " << e + 1;
  }
  EXPECT_EQ(kept_result.best_epoch, cast_result.best_epoch);
  EXPECT_EQ(kept_result.test.ToJson(), cast_result.test.ToJson());
  const auto kept_weights = models::TrainableParameters(*kept), cast_weights = models::TrainableParameters(*cast);
  for (size_t i = 0; i < kept_weights.size(); ++i) {
    EXPECT_TRUE(torch::equal(kept_weights[i], cast_weights[i])) << "parameter " << i;
  }
}

TEST(CachedStatesTest, ATextModelMovesNoImageTableToTheDevice) {
  const Problem setup;
  const auto model = ModelWithStatesIn(setup, torch::kBFloat16, torch::randn({31, 3, 16}));
  EXPECT_TRUE(model->item_states().text.defined());
  EXPECT_FALSE(model->item_states().image.defined()) << "the image table went to the device, unread";
}

}  // namespace
}  // namespace iisan::train
