// Image preprocessing parity with transformers' ViTImageProcessor (PIL resize, rescale,
// normalise) on generated PNG and JPEG files of many sizes, aspect ratios and modes
// (tests/fixtures/images, made by tools/make_parity_fixtures.py). PNGs decode identically, so
// the remaining difference is the resize's rounding; JPEGs also differ by decoder (stb vs
// libjpeg, a few levels per pixel). Bound: mean absolute difference 0.01 after normalisation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/data/image.h"
#include "core/models/safetensors.h"

namespace iisan::models {
namespace {

TEST(ImageParityTest, PreprocessedPixelsMatchViTImageProcessor) {
  const auto folder = std::filesystem::path(IISAN_SOURCE_DIR) / "tests/fixtures/images";
  const auto config = data::ImagePreprocessConfig::FromJsonFile(folder / "preprocessor_config.json");
  const SafetensorsReader reference(folder / "reference.safetensors");
  ASSERT_GE(reference.names().size(), 10u);
  for (const auto& name : reference.names()) {
    const auto expected = reference.Tensor(name);
    auto values = data::PreprocessImage(data::DecodeImage(folder / name), config);
    const auto ours = torch::from_blob(values.data(), {3, config.height, config.width}, torch::kFloat32);
    ASSERT_EQ(ours.sizes(), expected.sizes()) << name;
    const double mean_abs = (ours - expected).abs().mean().item<double>();
    const double max_abs = (ours - expected).abs().max().item<double>();
    EXPECT_LE(mean_abs, 0.01) << name;
    // PNG: only resize rounding (one uint8 level = 2/255 after normalisation) may differ.
    if (name.ends_with(".png")) {
      EXPECT_LE(max_abs, 2.0 / 255 + 1e-6) << name;
    }
    RecordProperty(name, std::to_string(mean_abs) + " mean / " + std::to_string(max_abs) + " max");
  }
}

}  // namespace
}  // namespace iisan::models
