// Image decoding (PNG round trip, grey and alpha handling, errors), the PIL-compatible bilinear
// resize (constant, identity, and PIL's own outputs from tools/gen_pil_resize_fixture.py), ViT
// normalisation, and reading preprocessor_config.json.
#include "core/data/image.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include <zlib.h>

#include "tests/core/data/test_files.h"

// The library owns stb_image_write's external symbols; this private copy writes the grey and
// RGBA files that the library's RGB-only WritePng cannot.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace iisan::data {
namespace {

namespace fs = std::filesystem;
using testing::Contains;
using testing::InputErrorOf;
using testing::TempDir;
using testing::WriteFile;

Image Constant(int width, int height, uint8_t r, uint8_t g, uint8_t b) {
  Image image{width, height, {}};
  for (int i = 0; i < width * height; ++i) image.rgb.insert(image.rgb.end(), {r, g, b});
  return image;
}

// The formula tools/gen_pil_resize_fixture.py feeds to PIL.
Image FixtureSource(int width, int height) {
  Image image{width, height, {}};
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.rgb.push_back(static_cast<uint8_t>((37 * x + 91 * y + 13) % 256));
      image.rgb.push_back(static_cast<uint8_t>((x * x + 3 * y * y + x * y) % 256));
      image.rgb.push_back(static_cast<uint8_t>((29 * (x ^ y) + 7) % 256));
    }
  }
  return image;
}

std::string Fnv1a64(const std::vector<uint8_t>& bytes) {
  uint64_t hash = 0xCBF29CE484222325ull;
  for (const uint8_t byte : bytes) hash = (hash ^ byte) * 0x100000001B3ull;
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

std::string Hex(const std::vector<uint8_t>& bytes) {
  std::string out;
  char pair[3];
  for (const uint8_t byte : bytes) {
    std::snprintf(pair, sizeof(pair), "%02x", byte);
    out += pair;
  }
  return out;
}

class ImageTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(ImageTest, PngRoundTrip) {
  Image image = FixtureSource(5, 3);
  const fs::path path = dir_.path() / "round.png";
  WritePng(path, image);
  const Image decoded = DecodeImage(path);
  EXPECT_EQ(decoded.width, 5);
  EXPECT_EQ(decoded.height, 3);
  EXPECT_EQ(decoded.rgb, image.rgb);
}

TEST_F(ImageTest, GreyIsReplicatedAndAlphaDropped) {
  const uint8_t grey[] = {0, 100, 255, 7};
  const uint8_t grey_alpha[] = {10, 0, 20, 255};
  const uint8_t rgba[] = {1, 2, 3, 0, 4, 5, 6, 128};
  const fs::path grey_path = dir_.path() / "grey.png";
  const fs::path grey_alpha_path = dir_.path() / "grey_alpha.png";
  const fs::path rgba_path = dir_.path() / "rgba.png";
  ASSERT_TRUE(stbi_write_png(grey_path.c_str(), 2, 2, 1, grey, 2));
  ASSERT_TRUE(stbi_write_png(grey_alpha_path.c_str(), 2, 1, 2, grey_alpha, 4));
  ASSERT_TRUE(stbi_write_png(rgba_path.c_str(), 2, 1, 4, rgba, 8));
  EXPECT_EQ(DecodeImage(grey_path).rgb,
            (std::vector<uint8_t>{0, 0, 0, 100, 100, 100, 255, 255, 255, 7, 7, 7}));
  EXPECT_EQ(DecodeImage(grey_alpha_path).rgb, (std::vector<uint8_t>{10, 10, 10, 20, 20, 20}));
  // Like PIL's convert("RGB"): alpha is discarded, not composited onto a background.
  EXPECT_EQ(DecodeImage(rgba_path).rgb, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6}));
}

TEST_F(ImageTest, DecodesJpeg) {
  const Image image = Constant(16, 8, 200, 40, 90);
  const fs::path path = dir_.path() / "flat.jpg";
  ASSERT_TRUE(stbi_write_jpg(path.c_str(), 16, 8, 3, image.rgb.data(), 95));
  const Image decoded = DecodeImage(path);
  ASSERT_EQ(decoded.rgb.size(), image.rgb.size());
  for (size_t i = 0; i < image.rgb.size(); ++i) EXPECT_NEAR(decoded.rgb[i], image.rgb[i], 4);
}

TEST_F(ImageTest, MissingOrCorruptFileIsAnInputError) {
  const fs::path missing = dir_.path() / "missing.png";
  EXPECT_EQ(InputErrorOf([&] { DecodeImage(missing); }),
            missing.string() + ": file not found; check the path");
  const fs::path corrupt = dir_.path() / "corrupt.jpg";
  WriteFile(corrupt, "this is not an image");
  const std::string error = InputErrorOf([&] { DecodeImage(corrupt); });
  EXPECT_TRUE(Contains(error, corrupt.string() + ": cannot decode the image")) << error;
  const fs::path truncated = dir_.path() / "truncated.png";
  WritePng(truncated, FixtureSource(8, 8));
  WriteFile(truncated, testing::ReadBytes(truncated).substr(0, 40));
  EXPECT_TRUE(Contains(InputErrorOf([&] { DecodeImage(truncated); }), "cannot decode"));
}

// Real PNG and JPEG files whose headers are rewritten to claim 16000x16000 and 20000x20000
// pixels (a decompression bomb is a few hundred bytes): refused from the header, naming the
// file and the dimensions, before the decoder allocates the pixels.
TEST_F(ImageTest, HeadersClaimingTooManyPixelsAreRefusedBeforeDecoding) {
  auto put16 = [](std::string& bytes, size_t at, uint32_t value) {
    bytes[at] = static_cast<char>(value >> 8);
    bytes[at + 1] = static_cast<char>(value);
  };
  // PNG: signature (8), IHDR length (4) and type (4), then width and height (4 each), five more
  // bytes of IHDR and its CRC over type and data.
  const fs::path png = dir_.path() / "bomb.png";
  WritePng(png, Constant(2, 2, 1, 2, 3));
  std::string bytes = testing::ReadBytes(png);
  ASSERT_EQ(bytes.substr(12, 4), "IHDR");
  for (const size_t at : {16, 20}) {
    put16(bytes, at, 0);
    put16(bytes, at + 2, 16000);
  }
  const uLong crc = crc32(0, reinterpret_cast<const Bytef*>(bytes.data() + 12), 17);
  put16(bytes, 29, static_cast<uint32_t>(crc >> 16));
  put16(bytes, 31, static_cast<uint32_t>(crc));
  WriteFile(png, bytes);
  const std::string png_error = InputErrorOf([&] { DecodeImage(png); });
  EXPECT_TRUE(Contains(png_error, png.string() + ": the image is 16000x16000 pixels, more than the 67108864"))
      << png_error;

  // JPEG: the baseline frame header (marker FF C0, length, precision) holds height and width.
  const fs::path jpeg = dir_.path() / "bomb.jpg";
  WriteJpeg(jpeg, Constant(16, 8, 200, 40, 90));
  bytes = testing::ReadBytes(jpeg);
  const size_t frame = bytes.find("\xFF\xC0");
  ASSERT_NE(frame, std::string::npos);
  put16(bytes, frame + 5, 20000);
  put16(bytes, frame + 7, 20000);
  WriteFile(jpeg, bytes);
  const std::string jpeg_error = InputErrorOf([&] { DecodeImage(jpeg); });
  EXPECT_TRUE(Contains(jpeg_error, jpeg.string() + ": the image is 20000x20000 pixels")) << jpeg_error;
}

TEST(ResizeTest, ConstantImageStaysConstant) {
  for (const auto& [from_w, from_h] :
       std::vector<std::pair<int, int>>{{37, 23}, {640, 480}, {3, 300}}) {
    const Image resized = ResizeBilinear(Constant(from_w, from_h, 123, 45, 200), 224, 224);
    ASSERT_EQ(resized.rgb.size(), 224u * 224 * 3);
    EXPECT_EQ(resized.rgb, Constant(224, 224, 123, 45, 200).rgb) << from_w << "x" << from_h;
  }
}

TEST(ResizeTest, SameSizeIsExact) {
  const Image image = FixtureSource(31, 17);
  EXPECT_EQ(ResizeBilinear(image, 31, 17).rgb, image.rgb);
}

TEST(ResizeTest, MatchesPil) {
  const fs::path fixture = fs::path(IISAN_SOURCE_DIR) / "tests/core/data/testdata/pil_resize.json";
  const auto json = nlohmann::json::parse(testing::ReadBytes(fixture));
  ASSERT_GE(json["cases"].size(), 5u);
  for (const auto& c : json["cases"]) {
    const Image resized =
        ResizeBilinear(FixtureSource(c["source_width"].get<int>(), c["source_height"].get<int>()),
                       c["width"].get<int>(), c["height"].get<int>());
    SCOPED_TRACE(c.dump());
    if (c.contains("rgb_hex")) {
      EXPECT_EQ(Hex(resized.rgb), c["rgb_hex"].get<std::string>());
    } else {
      EXPECT_EQ(Fnv1a64(resized.rgb), c["fnv1a64"].get<std::string>());
    }
  }
}

TEST(ResizeTest, RejectsEmptySizes) {
  EXPECT_THROW(ResizeBilinear(Constant(2, 2, 0, 0, 0), 0, 4), std::invalid_argument);
  EXPECT_THROW(ResizeBilinear(Image{}, 4, 4), std::invalid_argument);
}

TEST(PreprocessTest, NormalisesToMinusOneOneInChannelMajorOrder) {
  Image image{2, 1, {0, 255, 0, 255, 0, 255}};
  ImagePreprocessConfig config;
  config.do_resize = false;
  EXPECT_EQ(PreprocessImage(image, config), (std::vector<float>{-1, 1, 1, -1, -1, 1}));
}

TEST(PreprocessTest, DefaultConfigGivesViTInput) {
  const std::vector<float> out = PreprocessImage(Constant(50, 30, 255, 0, 51), {});
  ASSERT_EQ(out.size(), 3u * 224 * 224);
  EXPECT_FLOAT_EQ(out.front(), 1.0f);
  EXPECT_FLOAT_EQ(out[224 * 224], -1.0f);
  EXPECT_FLOAT_EQ(out.back(), static_cast<float>(51 / 255.0) / 0.5f - 1.0f);
}

TEST(PreprocessTest, StepsCanBeSwitchedOff) {
  ImagePreprocessConfig config;
  config.do_resize = false;
  config.do_rescale = false;
  config.do_normalize = false;
  EXPECT_EQ(PreprocessImage(Image{1, 1, {7, 8, 9}}, config), (std::vector<float>{7, 8, 9}));
  config.do_rescale = true;
  config.do_normalize = true;
  config.mean = {0.0f, 0.5f, 1.0f};
  config.std = {1.0f, 0.25f, 2.0f};
  const std::vector<float> out = PreprocessImage(Image{1, 1, {255, 255, 0}}, config);
  EXPECT_EQ(out, (std::vector<float>{1.0f, 2.0f, -0.5f}));
}

TEST(PreprocessTest, BytesThroughTheValueTableAreTheFloatsExactly) {
  // A noisy image that needs a resize (60x40 -> 32x48) and a config with uneven channels.
  Image image{60, 40, std::vector<uint8_t>(60 * 40 * 3)};
  uint32_t state = 12345;
  for (auto& byte : image.rgb) {
    state = state * 1664525u + 1013904223u;
    byte = static_cast<uint8_t>(state >> 24);
  }
  ImagePreprocessConfig config;
  config.width = 32;
  config.height = 48;
  config.mean = {0.485f, 0.456f, 0.406f};
  config.std = {0.229f, 0.224f, 0.225f};
  for (bool resize : {true, false}) {
    config.do_resize = resize;
    const auto floats = PreprocessImage(image, config);
    std::vector<uint8_t> bytes(floats.size());
    PreprocessImageBytes(image, config, bytes.data());
    const auto table = PixelValueTable(config);
    ASSERT_EQ(table.size(), 3u * 256);
    const size_t plane = floats.size() / 3;
    for (size_t i = 0; i < floats.size(); ++i) {
      const size_t channel = i / plane;
      ASSERT_EQ(table[channel * 256 + bytes[i]], floats[i]) << "element " << i << ", resize " << resize;
    }
  }
}

class PreprocessConfigTest : public ::testing::Test {
 protected:
  ImagePreprocessConfig Read(std::string_view json) {
    WriteFile(path_, json);
    return ImagePreprocessConfig::FromJsonFile(path_);
  }
  std::string ErrorOf(std::string_view json) {
    return InputErrorOf([&] { Read(json); });
  }

  TempDir dir_;
  fs::path path_ = dir_.path() / "preprocessor_config.json";
};

TEST_F(PreprocessConfigTest, ReadsHuggingFaceKeys) {
  const auto config =
      Read(R"({"do_normalize": false, "do_resize": true, "image_mean": [0.1, 0.2, 0.3],
      "image_std": 0.25, "size": 32, "rescale_factor": 0.5, "resample": 2,
      "image_processor_type": "ViTImageProcessor"})");
  EXPECT_EQ(config.height, 32);
  EXPECT_EQ(config.width, 32);
  EXPECT_FALSE(config.do_normalize);
  EXPECT_TRUE(config.do_rescale);
  EXPECT_EQ(config.mean, (std::array<float, 3>{0.1f, 0.2f, 0.3f}));
  EXPECT_EQ(config.std, (std::array<float, 3>{0.25f, 0.25f, 0.25f}));
  EXPECT_DOUBLE_EQ(config.rescale_factor, 0.5);
}

TEST_F(PreprocessConfigTest, SizeAsHeightAndWidth) {
  const auto config = Read(R"({"size": {"height": 48, "width": 64}})");
  EXPECT_EQ(config.height, 48);
  EXPECT_EQ(config.width, 64);
}

TEST_F(PreprocessConfigTest, MissingKeysKeepDefaults) {
  const auto config = Read("{}");
  const ImagePreprocessConfig defaults;
  EXPECT_EQ(config.height, defaults.height);
  EXPECT_EQ(config.mean, defaults.mean);
  EXPECT_TRUE(config.do_resize && config.do_rescale && config.do_normalize);
  EXPECT_DOUBLE_EQ(config.rescale_factor, 1.0 / 255);
}

TEST_F(PreprocessConfigTest, SharedVitConfig) {
  const fs::path path = testing::SharedDataDir() / "vit-base-patch16-224/preprocessor_config.json";
  if (!fs::exists(path)) GTEST_SKIP() << "no ViT checkpoint config at " << path;
  const auto config = ImagePreprocessConfig::FromJsonFile(path);
  EXPECT_EQ(config.height, 224);
  EXPECT_EQ(config.width, 224);
  EXPECT_EQ(config.mean, (std::array<float, 3>{0.5f, 0.5f, 0.5f}));
}

TEST_F(PreprocessConfigTest, WrongTypesNameTheField) {
  EXPECT_TRUE(Contains(ErrorOf(R"({"do_resize": "yes"})"),
                       path_.string() + ": field 'do_resize' must be true or false, got \"yes\""));
  EXPECT_TRUE(Contains(ErrorOf(R"({"size": {"shortest_edge": 224}})"), "field 'size' must be"));
  EXPECT_TRUE(Contains(ErrorOf(R"({"size": -3})"), "field 'size' must be"));
  EXPECT_TRUE(Contains(ErrorOf(R"({"image_mean": [0.5, 0.5]})"),
                       "field 'image_mean' must be a list of 3 numbers"));
  EXPECT_TRUE(
      Contains(ErrorOf(R"({"image_std": [1, 0, 1]})"), "field 'image_std' must be non-zero"));
  EXPECT_TRUE(Contains(ErrorOf(R"({"rescale_factor": "1/255"})"), "field 'rescale_factor'"));
  EXPECT_TRUE(Contains(ErrorOf(R"({"resample": 3})"), "field 'resample' must be 2 (bilinear"));
}

TEST_F(PreprocessConfigTest, BadJsonNamesLine) {
  EXPECT_TRUE(
      Contains(ErrorOf("{\n  \"size\": 224,\n  oops\n}"), path_.string() + ":3: not valid JSON"));
  EXPECT_TRUE(Contains(ErrorOf("[1, 2]"), "expected a JSON object"));
  EXPECT_TRUE(Contains(
      InputErrorOf([&] { ImagePreprocessConfig::FromJsonFile(dir_.path() / "none.json"); }),
      "file not found"));
}

}  // namespace
}  // namespace iisan::data
