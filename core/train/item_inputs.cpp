// Tokenising titles and decoding images for the live-backbone methods.
#include "core/train/item_inputs.h"

#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

#include <glog/logging.h>
#include <torch/torch.h>

#include "core/data/image.h"
#include "core/data/progress.h"
#include "core/data/tokenizer.h"

namespace iisan::train {

ItemInputs LoadItemInputs(const data::Dataset& dataset, const ItemInputOptions& options) {
  ItemInputs inputs;
  const int64_t rows = dataset.num_items() + 1;
  if (!options.vocab.empty()) {
    const auto tokenizer = data::WordPieceTokenizer::FromVocabFile(options.vocab);
    const int tokens = options.max_tokens;
    inputs.token_ids = torch::zeros({rows, tokens}, torch::kInt64);
    inputs.attention_mask = torch::zeros({rows, tokens}, torch::kInt64);
    auto ids = inputs.token_ids.accessor<int64_t, 2>();
    auto mask = inputs.attention_mask.accessor<int64_t, 2>();
    for (int64_t item = 1; item < rows; ++item) {
      const auto encoded = tokenizer.Encode(dataset.titles[item], tokens);
      for (int t = 0; t < tokens; ++t) {
        ids[item][t] = encoded.input_ids[t];
        mask[item][t] = encoded.attention_mask[t];
      }
    }
  }
  if (!options.preprocessor.empty()) {
    const auto config = data::ImagePreprocessConfig::FromJsonFile(options.preprocessor);
    config.RequireBatchable(options.preprocessor);
    if (!config.do_resize) {
      throw std::runtime_error(options.preprocessor.string() + ": do_resize is false, but a batch needs every "
                               "image at one size; set do_resize to true");
    }
    if (!config.do_rescale || std::abs(config.rescale_factor - 1.0 / 255.0) > 1e-12) {
      throw std::runtime_error(options.preprocessor.string() + ": images must be rescaled by 1/255 (do_rescale true, "
                               "rescale_factor 0.00392156862745098)");
    }
    for (int c = 0; c < 3; ++c) {
      inputs.mean[c] = config.do_normalize ? config.mean[c] : 0.0f;
      inputs.std[c] = config.do_normalize ? config.std[c] : 1.0f;
    }
    const int height = config.height, width = config.width;
    const int64_t plane = static_cast<int64_t>(height) * width;
    inputs.pixels = torch::zeros({rows, 3, height, width}, torch::kUInt8);
    uint8_t* out = inputs.pixels.data_ptr<uint8_t>();
    const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    data::ProgressMeter progress("decode images", rows - 1, "images");
    std::atomic<int64_t> next{1};
    std::exception_ptr failure;
    std::mutex failure_mutex;
    auto work = [&] {
      try {
        for (int64_t item = next++; item < rows; item = next++) {
          const auto resized = data::ResizeBilinear(data::DecodeImage(dataset.image_paths[item]), width, height);
          uint8_t* row = out + item * 3 * plane;
          for (int64_t p = 0; p < plane; ++p) {
            for (int c = 0; c < 3; ++c) row[c * plane + p] = resized.rgb[p * 3 + c];
          }
          progress.Advance(1);
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
        next = rows;
      }
    };
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) workers.emplace_back(work);
    for (auto& worker : workers) worker.join();
    if (failure) std::rethrow_exception(failure);
    progress.Finish();
  }
  return inputs;
}

}  // namespace iisan::train
