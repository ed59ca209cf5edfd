// Loading a cache into host or device memory in slabs, in the table dtype, and gathering rows
// by item row; files of another key or item list are refused by name.
#include "cache/store.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "cache/state_file.h"

namespace iisan::cache {
namespace {

std::filesystem::path WriteCache(const std::string& name, torch::Tensor& text, torch::Tensor& image) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / ("store_" + name);
  std::filesystem::remove_all(dir);
  torch::manual_seed(3);
  text = torch::randn({8, 2, 5});
  image = torch::randn({8, 2, 4});
  text[0].zero_();
  image[0].zero_();
  StateFileWriter writer(dir / "c.h5", {"", "a", "b", "c", "d", "e", "f", "g"}, 2, 5, 4);
  writer.WriteRows("text", 1, text.narrow(0, 1, 7));
  writer.WriteRows("image", 1, image.narrow(0, 1, 7));
  writer.Commit("0123456789abcdef", nlohmann::json::object());
  return dir / "c.h5";
}

TEST(StoreTest, LoadsInSlabsIntoTheRequestedDtypeAndGathersRows) {
  torch::Tensor text, image;
  const auto path = WriteCache("slabs", text, image);
  LoadOptions options;
  options.slab_rows = 3;  // 8 rows: slabs of 3, 3, 2
  const auto fp32 = LoadStateTables(path, options, "0123456789abcdef", {"", "a", "b", "c", "d", "e", "f", "g"});
  EXPECT_TRUE(torch::equal(fp32.text, text));
  EXPECT_TRUE(torch::equal(fp32.image, image));
  options.dtype = torch::kBFloat16;
  const auto bf16 = LoadStateTables(path, options);
  EXPECT_EQ(bf16.text.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(bf16.text, text.to(torch::kBFloat16)));

  const auto rows = torch::tensor({{3, 0}, {7, 3}}, torch::kInt64);
  const auto gathered = GatherItemRows(fp32.text, rows);
  ASSERT_EQ(gathered.sizes(), torch::IntArrayRef({2, 2, 2, 5}));
  EXPECT_TRUE(torch::equal(gathered[1][0], text[7]));
  EXPECT_TRUE(gathered[0][1].eq(0).all().item<bool>()) << "row 0 is padding";
}

TEST(StoreTest, LoadsStraightIntoDeviceMemory) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device on this machine";
  torch::Tensor text, image;
  const auto path = WriteCache("device", text, image);
  LoadOptions options;
  options.device = torch::Device(torch::kCUDA, 0);
  options.dtype = torch::kBFloat16;
  const auto tables = LoadStateTables(path, options);
  EXPECT_TRUE(tables.text.is_cuda());
  EXPECT_EQ(tables.text.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(tables.text.cpu(), text.to(torch::kBFloat16)));
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
