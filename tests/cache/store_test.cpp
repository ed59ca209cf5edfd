// Loading a cache into host or device memory in the dtype the file stores, only the tables of
// the modality asked for, and gathering rows by item row; files of another key or item list, or
// without a table the model reads, are refused by name.
#include "cache/store.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "cache/state_file.h"

namespace iisan::cache {
namespace {

const std::vector<std::string> kItems = {"", "a", "b", "c", "d", "e", "f", "g"};

// A text (8 x 2 x 5) and image (8 x 2 x 4) cache in `dtype`; `text` and `image` get what it holds.
std::filesystem::path WriteCache(const std::string& name, torch::Tensor& text, torch::Tensor& image,
                                 torch::ScalarType dtype = torch::kFloat32, bool with_image = true) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / ("store_" + name);
  std::filesystem::remove_all(dir);
  torch::manual_seed(3);
  text = torch::randn({8, 2, 5}).to(dtype);
  image = torch::randn({8, 2, 4}).to(dtype);
  text[0].zero_();
  image[0].zero_();
  StateFileWriter writer(dir / "c.h5", kItems, 2, 5, with_image ? 4 : 0, dtype);
  writer.WriteRows("text", 1, text.narrow(0, 1, 7));
  if (with_image) writer.WriteRows("image", 1, image.narrow(0, 1, 7));
  writer.Commit("0123456789abcdef", nlohmann::json::object());
  return dir / "c.h5";
}

TEST(StoreTest, LoadsTheFilesDtypeAndGathersRows) {
  torch::Tensor text, image;
  const auto path = WriteCache("fp32", text, image);
  const auto fp32 = LoadStateTables(path, {}, "0123456789abcdef", kItems);
  EXPECT_EQ(fp32.text.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(fp32.text, text));
  EXPECT_TRUE(torch::equal(fp32.image, image));

  const auto rows = torch::tensor({{3, 0}, {7, 3}}, torch::kInt64);
  const auto gathered = GatherItemRows(fp32.text, rows);
  ASSERT_EQ(gathered.sizes(), torch::IntArrayRef({2, 2, 2, 5}));
  EXPECT_TRUE(torch::equal(gathered[1][0], text[7]));
  EXPECT_TRUE(gathered[0][1].eq(0).all().item<bool>()) << "row 0 is padding";
}

// A bfloat16 cache is a bfloat16 table: half the memory of float32, no float32 copy anywhere.
TEST(StoreTest, ABfloat16CacheLoadsAsABfloat16Table) {
  torch::Tensor text, image;
  const auto path = WriteCache("bf16", text, image, torch::kBFloat16);
  const auto tables = LoadStateTables(path, {}, "0123456789abcdef", kItems);
  ASSERT_TRUE(tables.text.defined());
  EXPECT_EQ(tables.text.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(tables.image.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(tables.text.numel(), 8 * 2 * 5);
  EXPECT_EQ(tables.text.numel() * tables.text.element_size(), 8 * 2 * 5 * 2);
  EXPECT_TRUE(torch::equal(tables.text, text));
  EXPECT_TRUE(torch::equal(tables.image, image));
}

TEST(StoreTest, OnlyTheTablesOfTheModalityAskedForAreLoaded) {
  torch::Tensor text, image;
  const auto path = WriteCache("modality", text, image);
  LoadOptions options;
  options.modality = models::Modality::kText;
  const auto text_only = LoadStateTables(path, options);
  EXPECT_TRUE(torch::equal(text_only.text, text));
  EXPECT_FALSE(text_only.image.defined()) << "a text model's load read the image states";
  options.modality = models::Modality::kImage;
  const auto image_only = LoadStateTables(path, options);
  EXPECT_FALSE(image_only.text.defined());
  EXPECT_TRUE(torch::equal(image_only.image, image));

  // A cache without a table the model reads is refused by name, not loaded without it.
  const auto text_file = WriteCache("text_file", text, image, torch::kFloat32, /*with_image=*/false);
  options.modality = models::Modality::kTextImage;
  try {
    LoadStateTables(text_file, options);
    ADD_FAILURE() << "loaded a text-only cache for a text+image model";
  } catch (const CacheError& error) {
    EXPECT_NE(std::string(error.what()).find(text_file.string() + ": holds no image states"), std::string::npos)
        << error.what();
  }
}

TEST(StoreTest, LoadsStraightIntoDeviceMemory) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device on this machine";
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    torch::Tensor text, image;
    const auto path = WriteCache("device", text, image, dtype);
    LoadOptions options;
    options.device = torch::Device(torch::kCUDA, 0);
    options.slab_rows = 3;  // 8 rows: slabs of 3, 3, 2 through the two pinned buffers
    const auto tables = LoadStateTables(path, options);
    EXPECT_TRUE(tables.text.is_cuda());
    EXPECT_EQ(tables.text.scalar_type(), dtype);
    EXPECT_TRUE(torch::equal(tables.text.cpu(), text));
    EXPECT_TRUE(torch::equal(tables.image.cpu(), image));
  }
}

TEST(StoreTest, ACacheOfAnotherKeyOrItemListIsRefusedByName) {
  torch::Tensor text, image;
  const auto path = WriteCache("refuse", text, image);
  for (const auto& [key, items] : {std::pair{std::string("fedcba9876543210"), std::vector<std::string>{}},
                                   std::pair{std::string(""), std::vector<std::string>{"", "a", "c", "b", "d", "e", "f", "g"}}}) {
    try {
      LoadStateTables(path, {}, key, items);
      ADD_FAILURE() << "loaded a cache that belongs to another job";
    } catch (const CacheError& error) {
      EXPECT_NE(std::string(error.what()).find(path.string()), std::string::npos) << error.what();
    }
  }
}

}  // namespace
}  // namespace iisan::cache
