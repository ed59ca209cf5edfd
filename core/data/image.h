// Item images: decoding to RGB, PNG writing, and the ViT preprocessing of Hugging Face's
// ViTImageProcessor (PIL bilinear resize, rescale, normalise) reproduced without Python.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace iisan::data {

struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // height rows of width RGB triples
};

// Decodes a PNG, JPEG, BMP, GIF, TGA or PNM file to RGB the way PIL's convert("RGB") does:
// grey is replicated, alpha dropped. InputError naming the file if it is missing or corrupt.
Image DecodeImage(const std::filesystem::path& path);

// Writes image as a PNG; the bytes depend only on the pixels. InputError if it cannot be written.
void WritePng(const std::filesystem::path& path, const Image& image);

// Writes image as a baseline JPEG of the given quality (1..100). InputError if it cannot be written.
void WriteJpeg(const std::filesystem::path& path, const Image& image, int quality = 90);

// The bytes WriteJpeg writes (for writers that place the file themselves, e.g. atomically).
// std::invalid_argument if the image is malformed or cannot be encoded.
std::string EncodeJpeg(const Image& image, int quality = 90);

// PIL's Image.resize((width, height), Image.BILINEAR): a separable triangle filter whose support
// widens with the downscale factor (antialiasing), horizontal pass first, 8-bit rounding after
// each pass, fixed-point weights. Sizes must be positive.
Image ResizeBilinear(const Image& image, int width, int height);

struct ImagePreprocessConfig {
  int height = 224;
  int width = 224;
  std::array<float, 3> mean{0.5f, 0.5f, 0.5f};
  std::array<float, 3> std{0.5f, 0.5f, 0.5f};
  bool do_resize = true;
  bool do_rescale = true;
  bool do_normalize = true;
  double rescale_factor = 1.0 / 255.0;

  // Reads a Hugging Face preprocessor_config.json. Keys it lacks keep the defaults above; a key
  // of the wrong type or an unsupported value ("resample" other than bilinear) is an InputError.
  static ImagePreprocessConfig FromJsonFile(const std::filesystem::path& path);
  // For the backbones, which take every image of a batch at one size: InputError naming `path`
  // and the option when a setting the batch pipeline does not implement is on (do_resize off).
  void RequireBatchable(const std::filesystem::path& path) const;
};

// Resize, rescale, normalise as configured; returns channel-major floats [3, height, width]
// (the image's own size when do_resize is off).
std::vector<float> PreprocessImage(const Image& image, const ImagePreprocessConfig& config);

// PreprocessImage in two steps, for pipelines that move bytes rather than floats: the resize
// (when configured) as channel-major bytes [3, height, width] written to `out`, and the value
// table [3 * 256] whose entry c * 256 + b is the float PreprocessImage gives byte b of channel
// c. Looking the bytes up in the table reproduces PreprocessImage bit for bit.
void PreprocessImageBytes(const Image& image, const ImagePreprocessConfig& config, uint8_t* out);
std::vector<float> PixelValueTable(const ImagePreprocessConfig& config);

}  // namespace iisan::data
