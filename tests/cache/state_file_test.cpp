// The HDF5 state file: round trip, atomic completion, and corrupt files detected.
#include "cache/state_file.h"

#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace iisan::cache {
namespace {

std::filesystem::path TempDir(const std::string& name) {
  auto dir = std::filesystem::path(::testing::TempDir()) / ("state_file_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(StateFileTest, RoundTripsRowsItemsAndAttributes) {
  const auto path = TempDir("roundtrip") / "c.h5";
  const std::vector<std::string> items = {"", "A1", "B2", "C3"};
  torch::manual_seed(0);
  auto text = torch::randn({3, 2, 5});
  auto image = torch::randn({3, 2, 4});
  {
    StateFileWriter writer(path, items, 2, 5, 4);
    writer.WriteRows("text", 1, text.narrow(0, 0, 2));
    writer.WriteRows("text", 3, text.narrow(0, 2, 1));
    writer.WriteRows("image", 1, image);
    writer.Commit("abc123", {{"kept_layers", {0, 2}}});
  }
  const auto file = ReadStateFile(path);
  EXPECT_EQ(file.items, items);
  EXPECT_EQ(file.fingerprint, "abc123");
  EXPECT_EQ(file.inputs["kept_layers"], nlohmann::json({0, 2}));
  ASSERT_EQ(file.text.sizes(), torch::IntArrayRef({4, 2, 5}));
  EXPECT_TRUE(file.text[0].eq(0).all().item<bool>()) << "row 0 is padding and must be zero";
  EXPECT_TRUE(torch::equal(file.text.narrow(0, 1, 3), text));
  EXPECT_TRUE(torch::equal(file.image.narrow(0, 1, 3), image));
}

TEST(StateFileTest, TextOnlyFileHasNoImage) {
  const auto path = TempDir("textonly") / "c.h5";
  {
    StateFileWriter writer(path, {"", "A"}, 1, 3, 0);
    writer.WriteRows("text", 1, torch::ones({1, 1, 3}));
    writer.Commit("f", nlohmann::json::object());
  }
  const auto file = ReadStateFile(path);
  EXPECT_TRUE(file.text.defined());
  EXPECT_FALSE(file.image.defined());
}

TEST(StateFileTest, AnUncommittedWriterLeavesNothing) {
  const auto dir = TempDir("abandoned");
  {
    StateFileWriter writer(dir / "c.h5", {"", "A"}, 1, 3, 0);
    writer.WriteRows("text", 1, torch::ones({1, 1, 3}));
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

TEST(StateFileTest, RowsThatDoNotFitAreRejected) {
  const auto dir = TempDir("misfit");
  StateFileWriter writer(dir / "c.h5", {"", "A"}, 1, 3, 0);
  EXPECT_THROW(writer.WriteRows("text", 1, torch::ones({2, 1, 3})), CacheError);
  EXPECT_THROW(writer.WriteRows("text", 1, torch::ones({1, 2, 3})), CacheError);
}

TEST(StateFileTest, TruncatedAndForeignFilesAreNamedErrors) {
  const auto dir = TempDir("corrupt");
  const auto path = dir / "c.h5";
  {
    StateFileWriter writer(path, {"", "A", "B"}, 2, 8, 0);
    writer.WriteRows("text", 1, torch::ones({2, 2, 8}));
    writer.Commit("f", nlohmann::json::object());
  }
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size / 2);
  try {
    ReadStateFile(path);
    FAIL() << "a truncated file was read";
  } catch (const CacheError& error) {
    EXPECT_NE(std::string(error.what()).find(path.string()), std::string::npos) << error.what();
  }

  const auto foreign = dir / "foreign.h5";
  std::ofstream(foreign) << "not hdf5 at all";
  EXPECT_THROW(ReadStateFile(foreign), CacheError);
  EXPECT_THROW(ReadStateFile(dir / "absent.h5"), CacheError);
}

}  // namespace
}  // namespace iisan::cache
