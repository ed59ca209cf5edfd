// Image decoding (stb_image), PNG encoding (stb_image_write) and a re-implementation of PIL's
// antialiased bilinear resampling (Pillow's Resample.c semantics), so that pixels fed to ViT
// match what Hugging Face's ViTImageProcessor produces from the same file.
#include "core/data/image.h"

// stb is third-party C; its warnings are not ours to fix.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "core/data/input_error.h"
#include "core/data/json_input.h"

namespace iisan::data {
namespace {

constexpr int kChannels = 3;
// Pillow's fixed-point format for 8-bit resampling: weights carry 22 fractional bits.
constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr int kBilinearSupport = 1;
constexpr int kPilBilinear = 2;  // PIL.Image.BILINEAR, as preprocessor_config.json spells it
constexpr int64_t kMaxImageSide = 1 << 16;  // a configured size above this is surely a typo
// Decoding bounds: Pillow refuses images above about 179 Mpixels as decompression bombs; item
// images are photos of products, and 64 Mpixels (8192 x 8192) is already far above any of them.
constexpr int64_t kMaxImagePixels = int64_t{1} << 26;
constexpr size_t kMaxImageFileBytes = size_t{256} << 20;

double Triangle(double x) {
  x = std::abs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// For each output pixel along one axis: the first input pixel, how many follow, and their weights.
struct AxisWeights {
  int kernel_size = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;  // kernel_size per output pixel
};

AxisWeights ComputeAxisWeights(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = kBilinearSupport * filter_scale;
  AxisWeights axis;
  axis.kernel_size = static_cast<int>(std::ceil(support)) * 2 + 1;
  axis.first.resize(static_cast<size_t>(out_size));
  axis.count.resize(static_cast<size_t>(out_size));
  axis.weights.assign(static_cast<size_t>(out_size) * axis.kernel_size, 0);
  std::vector<double> kernel(static_cast<size_t>(axis.kernel_size));
  for (int out = 0; out < out_size; ++out) {
    const double center = (out + 0.5) * scale;
    // Pillow truncates toward zero here; clamping to 0 afterwards makes that a floor.
    const int first = std::max(static_cast<int>(center - support + 0.5), 0);
    const int count = std::min(static_cast<int>(center + support + 0.5), in_size) - first;
    // The floating-point expressions follow Pillow's operation for operation, so that the
    // rounded fixed-point weights come out identical.
    const double inverse_scale = 1.0 / filter_scale;
    double total = 0.0;
    for (int k = 0; k < count; ++k) {
      kernel[k] = Triangle((k + first - center + 0.5) * inverse_scale);
      total += kernel[k];
    }
    int32_t* weights = &axis.weights[static_cast<size_t>(out) * axis.kernel_size];
    for (int k = 0; k < count; ++k) {
      const double normalized = total != 0.0 ? kernel[k] / total : kernel[k];
      weights[k] = static_cast<int32_t>(0.5 + normalized * (1 << kPrecisionBits));
    }
    axis.first[out] = first;
    axis.count[out] = count;
  }
  return axis;
}

uint8_t ClipToByte(int32_t accumulated) {
  if (accumulated <= 0) return 0;
  if (accumulated >= (255 << kPrecisionBits)) return 255;
  return static_cast<uint8_t>(accumulated >> kPrecisionBits);
}

// One resampling pass along x (stride kChannels) or y (stride width * kChannels).
Image ResampleAxis(const Image& in, int out_width, int out_height, bool horizontal) {
  const AxisWeights axis = horizontal ? ComputeAxisWeights(in.width, out_width)
                                      : ComputeAxisWeights(in.height, out_height);
  Image out{out_width, out_height,
            std::vector<uint8_t>(static_cast<size_t>(out_width) * out_height * kChannels)};
  const size_t step = horizontal ? kChannels : static_cast<size_t>(in.width) * kChannels;
  for (int y = 0; y < out_height; ++y) {
    for (int x = 0; x < out_width; ++x) {
      const int along = horizontal ? x : y;
      const int first = axis.first[along];
      const int32_t* weights = &axis.weights[static_cast<size_t>(along) * axis.kernel_size];
      const size_t origin = horizontal ? (static_cast<size_t>(y) * in.width + first) * kChannels
                                       : (static_cast<size_t>(first) * in.width + x) * kChannels;
      for (int c = 0; c < kChannels; ++c) {
        int32_t sum = 1 << (kPrecisionBits - 1);  // rounds the final shift to nearest
        for (int k = 0; k < axis.count[along]; ++k) {
          sum += in.rgb[origin + k * step + c] * weights[k];
        }
        out.rgb[(static_cast<size_t>(y) * out_width + x) * kChannels + c] = ClipToByte(sum);
      }
    }
  }
  return out;
}

void CheckImage(const Image& image) {
  if (image.width <= 0 || image.height <= 0 ||
      image.rgb.size() != static_cast<size_t>(image.width) * image.height * kChannels) {
    throw std::invalid_argument("image must be non-empty with width * height * 3 bytes; got " +
                                std::to_string(image.width) + "x" + std::to_string(image.height) +
                                " with " + std::to_string(image.rgb.size()) + " bytes");
  }
}

using Json = nlohmann::json;

[[noreturn]] void ThrowField(const std::filesystem::path& path, const std::string& key,
                             const std::string& expected, const Json& value) {
  throw InputError(path, 0,
                   "field '" + key + "' must be " + expected + ", got " + DescribeJsonValue(value) +
                       "; fix it or remove it to use the default");
}

void ReadBool(const Json& json, const std::filesystem::path& path, const char* key, bool* out) {
  if (!json.contains(key)) return;
  if (!json[key].is_boolean()) ThrowField(path, key, "true or false", json[key]);
  *out = json[key].get<bool>();
}

void ReadPositiveNumber(const Json& json, const std::filesystem::path& path, const char* key,
                        double* out) {
  if (!json.contains(key)) return;
  if (!json[key].is_number() || json[key].get<double>() <= 0) {
    ThrowField(path, key, "a positive number", json[key]);
  }
  *out = json[key].get<double>();
}

// image_mean / image_std: three numbers, or one for all channels.
void ReadChannelValues(const Json& json, const std::filesystem::path& path, const char* key,
                       std::array<float, 3>* out) {
  if (!json.contains(key)) return;
  const Json& value = json[key];
  if (value.is_number()) {
    out->fill(value.get<float>());
    return;
  }
  if (!value.is_array() || value.size() != 3 ||
      !std::all_of(value.begin(), value.end(), [](const Json& v) { return v.is_number(); })) {
    ThrowField(path, key, "a list of 3 numbers", value);
  }
  for (size_t c = 0; c < 3; ++c) (*out)[c] = value[c].get<float>();
}

void ReadSize(const Json& json, const std::filesystem::path& path, ImagePreprocessConfig* config) {
  if (!json.contains("size")) return;
  const Json& size = json["size"];
  const auto positive_int = [](const Json& v) {
    return v.is_number_integer() && v.get<int64_t>() > 0 && v.get<int64_t>() <= kMaxImageSide;
  };
  if (positive_int(size)) {
    config->height = config->width = size.get<int>();
  } else if (size.is_object() && size.size() == 2 && size.contains("height") &&
             size.contains("width") && positive_int(size["height"]) &&
             positive_int(size["width"])) {
    config->height = size["height"].get<int>();
    config->width = size["width"].get<int>();
  } else {
    ThrowField(path, "size", "a positive integer or {\"height\": H, \"width\": W}", size);
  }
}

}  // namespace

Image DecodeImage(const std::filesystem::path& path) {
  const std::string bytes = ReadBoundedFile(path, kMaxImageFileBytes);
  int width = 0, height = 0, channels_in_file = 0;
  // The header's dimensions, before anything is allocated: a file of a few hundred bytes can
  // claim gigapixels, and the decoder would allocate them whole.
  if (stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()), &width,
                            &height, &channels_in_file) != 0 &&
      static_cast<int64_t>(width) * height > kMaxImagePixels) {
    throw InputError(path, 0, "the image is " + std::to_string(width) + "x" + std::to_string(height) + " pixels, more "
                              "than the " + std::to_string(kMaxImagePixels) + " this reader decodes; scale it down "
                              "(the backbones see it at the preprocessor's size anyway)");
  }
  // Asking stb for 3 channels replicates grey and drops alpha, as PIL's convert("RGB") does.
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()),
                            static_cast<int>(bytes.size()), &width, &height, &channels_in_file,
                            kChannels),
      stbi_image_free);
  if (pixels == nullptr) {
    throw InputError(path, 0,
                     std::string("cannot decode the image (") + stbi_failure_reason() +
                         "); replace it with a valid PNG or JPEG");
  }
  Image image{width, height, {}};
  image.rgb.assign(pixels.get(), pixels.get() + static_cast<size_t>(width) * height * kChannels);
  return image;
}

void WritePng(const std::filesystem::path& path, const Image& image) {
  CheckImage(image);
  std::string png;
  const auto append = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data),
                                               static_cast<size_t>(size));
  };
  const bool encoded = stbi_write_png_to_func(append, &png, image.width, image.height, kChannels,
                                              image.rgb.data(), image.width * kChannels) != 0;
  std::ofstream out(path, std::ios::binary);
  if (!encoded || !out.write(png.data(), static_cast<std::streamsize>(png.size())) ||
      !out.flush()) {
    throw InputError(path, 0, "cannot write the PNG; check that the folder exists and is writable");
  }
}

namespace {

bool EncodeJpegTo(const Image& image, int quality, std::string* jpeg) {
  CheckImage(image);
  const auto append = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
  };
  return stbi_write_jpg_to_func(append, jpeg, image.width, image.height, kChannels, image.rgb.data(),
                                std::clamp(quality, 1, 100)) != 0;
}

}  // namespace

std::string EncodeJpeg(const Image& image, int quality) {
  std::string jpeg;
  if (!EncodeJpegTo(image, quality, &jpeg)) throw std::invalid_argument("cannot encode the image as JPEG");
  return jpeg;
}

void WriteJpeg(const std::filesystem::path& path, const Image& image, int quality) {
  std::string jpeg;
  const bool encoded = EncodeJpegTo(image, quality, &jpeg);
  std::ofstream out(path, std::ios::binary);
  if (!encoded || !out.write(jpeg.data(), static_cast<std::streamsize>(jpeg.size())) || !out.flush()) {
    throw InputError(path, 0, "cannot write the JPEG; check that the folder exists and is writable");
  }
}

Image ResizeBilinear(const Image& image, int width, int height) {
  CheckImage(image);
  if (width <= 0 || height <= 0) {
    throw std::invalid_argument("resize target must be positive; got " + std::to_string(width) +
                                "x" + std::to_string(height));
  }
  // Like Pillow, skip a pass whose axis keeps its size (the pass would be an exact copy).
  Image out = image;
  if (width != out.width) out = ResampleAxis(out, width, out.height, /*horizontal=*/true);
  if (height != out.height) out = ResampleAxis(out, width, height, /*horizontal=*/false);
  return out;
}

void ImagePreprocessConfig::RequireBatchable(const std::filesystem::path& path) const {
  if (!do_resize) {
    throw InputError(path, 0, "\"do_resize\": false is not supported: the backbones take every image of a batch at "
                              "the configured size; set \"do_resize\" to true");
  }
}

ImagePreprocessConfig ImagePreprocessConfig::FromJsonFile(const std::filesystem::path& path) {
  const std::string text = ReadBoundedFile(path, size_t{1} << 20);
  Json json;
  try {
    json = Json::parse(text, DepthLimit<Json>(path.string(), 16));
  } catch (const Json::parse_error& error) {
    const auto end = text.begin() + static_cast<ptrdiff_t>(std::min(error.byte, text.size()));
    const int64_t line = 1 + std::count(text.begin(), end, '\n');
    throw InputError(path, line, "not valid JSON (" + JsonErrorWithoutText(error) + ")");
  } catch (const Json::exception& error) {  // a number out of range (1e999)
    throw InputError(path, 0, "not valid JSON (" + JsonErrorWithoutText(error) + ")");
  }
  if (!json.is_object()) {
    throw InputError(path, 0, "expected a JSON object like {\"size\": 224, ...}");
  }
  ImagePreprocessConfig config;
  ReadSize(json, path, &config);
  ReadBool(json, path, "do_resize", &config.do_resize);
  ReadBool(json, path, "do_rescale", &config.do_rescale);
  ReadBool(json, path, "do_normalize", &config.do_normalize);
  ReadPositiveNumber(json, path, "rescale_factor", &config.rescale_factor);
  ReadChannelValues(json, path, "image_mean", &config.mean);
  ReadChannelValues(json, path, "image_std", &config.std);
  if (std::find(config.std.begin(), config.std.end(), 0.0f) != config.std.end()) {
    ThrowField(path, "image_std", "non-zero", json["image_std"]);
  }
  if (json.contains("resample") &&
      !(json["resample"].is_number_integer() && json["resample"].get<int>() == kPilBilinear)) {
    ThrowField(path, "resample", "2 (bilinear, the only filter implemented)", json["resample"]);
  }
  return config;
}

namespace {

// Rescale, then normalise, as Hugging Face: the rescale in float64 cast to float32, the
// normalisation in float32.
float PixelValue(uint8_t byte, int channel, const ImagePreprocessConfig& config) {
  float value = config.do_rescale ? static_cast<float>(byte * config.rescale_factor) : static_cast<float>(byte);
  if (config.do_normalize) value = (value - config.mean[channel]) / config.std[channel];
  return value;
}

Image ResizeForModel(const Image& image, const ImagePreprocessConfig& config) {
  CheckImage(image);
  return config.do_resize ? ResizeBilinear(image, config.width, config.height) : image;
}

}  // namespace

std::vector<float> PreprocessImage(const Image& image, const ImagePreprocessConfig& config) {
  const Image resized = ResizeForModel(image, config);
  const size_t plane = static_cast<size_t>(resized.width) * resized.height;
  std::vector<float> out(plane * kChannels);
  for (size_t pixel = 0; pixel < plane; ++pixel) {
    for (int c = 0; c < kChannels; ++c) {
      out[c * plane + pixel] = PixelValue(resized.rgb[pixel * kChannels + c], c, config);
    }
  }
  return out;
}

void PreprocessImageBytes(const Image& image, const ImagePreprocessConfig& config, uint8_t* out) {
  const Image resized = ResizeForModel(image, config);
  const size_t plane = static_cast<size_t>(resized.width) * resized.height;
  for (size_t pixel = 0; pixel < plane; ++pixel) {
    for (int c = 0; c < kChannels; ++c) out[c * plane + pixel] = resized.rgb[pixel * kChannels + c];
  }
}

std::vector<float> PixelValueTable(const ImagePreprocessConfig& config) {
  std::vector<float> table(kChannels * 256);
  for (int c = 0; c < kChannels; ++c) {
    for (int byte = 0; byte < 256; ++byte) table[c * 256 + byte] = PixelValue(static_cast<uint8_t>(byte), c, config);
  }
  return table;
}

}  // namespace iisan::data
