// The HDF5 state file: round trip, atomic completion, and corrupt files detected.
#include "cache/state_file.h"

#include <fstream>
#include <functional>
#include <iterator>

#include <gtest/gtest.h>
#include <hdf5.h>
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

// A bfloat16 cache stores bfloat16 (half the bytes of float32 states, no conversion on
// reading): what bf16 backbones computed comes back exactly, in bfloat16.
TEST(StateFileTest, ABfloat16CacheStoresAndReadsBfloat16) {
  const auto dir = TempDir("bf16");
  const std::vector<std::string> items(65, "item");
  torch::manual_seed(1);
  const auto states = torch::randn({64, 4, 64}).to(torch::kBFloat16);
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    StateFileWriter writer(dir / (std::string(c10::toString(dtype)) + ".h5"), items, 4, 64, 0, dtype);
    writer.WriteRows("text", 1, states.to(torch::kFloat32));  // as the builder hands them over
    writer.Commit("f", {{"dtype", dtype == torch::kBFloat16 ? "bfloat16" : "float32"}});
  }
  const auto fp32_path = dir / "Float.h5", bf16_path = dir / "BFloat16.h5";
  const auto file = ReadStateFile(bf16_path);
  EXPECT_EQ(file.text.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(file.text.narrow(0, 1, 64), states));
  EXPECT_TRUE(file.text[0].eq(0).all().item<bool>()) << "row 0 is padding and must be zero";
  EXPECT_TRUE(torch::equal(ReadStateFile(fp32_path).text.narrow(0, 1, 64), states.to(torch::kFloat32)));
  // 64 x 4 x 64 states: 64 KiB in float32, 32 KiB in bfloat16.
  EXPECT_LT(std::filesystem::file_size(bf16_path) + 30000, std::filesystem::file_size(fp32_path));

  const StateFileReader reader(bf16_path);
  EXPECT_EQ(reader.header().dtype, torch::kBFloat16);
  auto slab = torch::empty({3, 4, 64}, torch::kBFloat16);
  reader.ReadRowsInto("text", 10, slab);
  EXPECT_TRUE(torch::equal(slab, states.narrow(0, 9, 3)));
  auto wrong = torch::empty({3, 4, 64}, torch::kFloat32);
  EXPECT_THROW(reader.ReadRowsInto("text", 10, wrong), std::invalid_argument);

  EXPECT_THROW(StateFileWriter(dir / "half.h5", items, 4, 64, 0, torch::kHalf), CacheError);
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

// Open HDF5 objects of every file, of the given kinds.
ssize_t OpenHdf5Objects(unsigned kinds = H5F_OBJ_ALL) {
  return H5Fget_obj_count(static_cast<hid_t>(H5F_OBJ_ALL), kinds);
}

TEST(StateFileTest, RowsThatDoNotFitAreRejected) {
  const auto dir = TempDir("misfit");
  {
    StateFileWriter writer(dir / "c.h5", {"", "A"}, 1, 3, 0);
    EXPECT_THROW(writer.WriteRows("text", 1, torch::ones({2, 1, 3})), CacheError);
    EXPECT_THROW(writer.WriteRows("text", 1, torch::ones({1, 2, 3})), CacheError);
    // A refusal closes the dataset it opened: only the writer's file is open.
    EXPECT_EQ(OpenHdf5Objects(), 1);
    EXPECT_EQ(OpenHdf5Objects(H5F_OBJ_FILE), 1);
  }
  // Gone with the writer; a dataset left open would have kept the file open too.
  EXPECT_EQ(OpenHdf5Objects(), 0);
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

// A byte of the stored states changed on disk (a bad sector, a stray write): the chunk's
// checksum no longer matches, and reading it is an error naming the file, not wrong states.
TEST(StateFileTest, ADamagedStateIsAnErrorNotAWrongValue) {
  const auto path = TempDir("damaged") / "c.h5";
  {
    StateFileWriter writer(path, {"", "A", "B"}, 2, 4, 0);
    writer.WriteRows("text", 1, torch::full({2, 2, 4}, 1.5f));
    writer.Commit("f", nlohmann::json::object());
  }
  ASSERT_EQ(ReadStateFile(path).text[1][0][0].item<float>(), 1.5f);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const float value = 1.5f;
  const auto at = bytes.find(std::string(reinterpret_cast<const char*>(&value), sizeof value));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 1] ^= 0x01;  // 1.5 becomes another finite number
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  try {
    ReadStateFile(path);
    FAIL() << "a damaged state was read";
  } catch (const CacheError& error) {
    EXPECT_NE(std::string(error.what()).find(path.string()), std::string::npos) << error.what();
  }
}

// Files that look like caches but whose attributes and datasets have other ranks, shapes or
// types (what `iisan cache ls` meets in a shared cache.dir): named errors, never a crash.
TEST(StateFileTest, HostileShapesAndTypesAreNamedErrors) {
  const auto dir = TempDir("hostile");
  auto make = [&](const std::string& name, const std::function<void(hid_t)>& fill) {
    const auto path = dir / name;
    hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    fill(file);
    H5Fclose(file);
    return path;
  };
  auto string_attribute = [](hid_t file, const char* name, const std::string& value, hsize_t count) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, value.size());
    hid_t space = count == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &count, nullptr);
    hid_t attr = H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    const std::string values = [&] {
      std::string all;
      for (hsize_t i = 0; i < count; ++i) all += value;
      return all;
    }();
    H5Awrite(attr, type, values.data());
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
  };
  auto good_attributes = [&](hid_t file) {
    string_attribute(file, "format_version", std::to_string(kStateFileFormatVersion), 1);
    string_attribute(file, "fingerprint", "0123456789abcdef", 1);
    string_attribute(file, "inputs", "{}", 1);
  };
  // /items of `rows` fixed-length strings (16 bytes), as the writer makes it.
  auto items = [](hid_t file, hsize_t rows) {
    constexpr size_t kWidth = 16;
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, kWidth);
    hid_t space = H5Screate_simple(1, &rows, nullptr);
    hid_t set = H5Dcreate2(file, "/items", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    std::string packed(rows * kWidth, '\0');
    for (hsize_t i = 1; i < rows; ++i) {
      const std::string name = "item" + std::to_string(i);
      packed.replace(i * kWidth, name.size(), name);
    }
    H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, packed.data());
    H5Dclose(set);
    H5Sclose(space);
    H5Tclose(type);
  };
  // /<modality>/hidden of `dims` in `type`, filled with ones unless `written` is false.
  auto hidden = [](hid_t file, const char* modality, std::vector<hsize_t> dims, hid_t type, bool written = true) {
    hid_t group = H5Gcreate2(file, (std::string("/") + modality).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(plist, static_cast<int>(dims.size()), dims.data());
    hid_t set = H5Dcreate2(group, "hidden", type, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    if (written) {
      hsize_t count = 1;
      for (const hsize_t dim : dims) count *= dim;
      const std::vector<double> ones(count, 1.0);
      H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, ones.data());
    }
    H5Dclose(set);
    H5Pclose(plist);
    H5Sclose(space);
    H5Gclose(group);
  };
  auto attributes_with_inputs = [&](hid_t file, const std::string& inputs) {
    string_attribute(file, "format_version", std::to_string(kStateFileFormatVersion), 1);
    string_attribute(file, "fingerprint", "0123456789abcdef", 1);
    string_attribute(file, "inputs", inputs, 1);
  };
  std::vector<std::filesystem::path> hostile;
  // format_version as 1,000 strings: reading them into one string's bytes would overrun it.
  hostile.push_back(make("array_attribute.h5", [&](hid_t file) {
    string_attribute(file, "format_version", std::to_string(kStateFileFormatVersion), 1000);
  }));
  // format_version as an integer.
  hostile.push_back(make("int_attribute.h5", [&](hid_t file) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(file, "format_version", H5T_NATIVE_INT, space, H5P_DEFAULT, H5P_DEFAULT);
    const int value = 1;
    H5Awrite(attr, H5T_NATIVE_INT, &value);
    H5Aclose(attr);
    H5Sclose(space);
  }));
  // /items two-dimensional: reading its size into one number would overrun it.
  hostile.push_back(make("items_2d.h5", [&](hid_t file) {
    good_attributes(file);
    const hsize_t dims[2] = {3, 4};
    hid_t space = H5Screate_simple(2, dims, nullptr);
    hid_t set = H5Dcreate2(file, "/items", H5T_NATIVE_INT, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(set);
    H5Sclose(space);
  }));
  // /items as numbers.
  hostile.push_back(make("items_numbers.h5", [&](hid_t file) {
    good_attributes(file);
    const hsize_t rows = 3;
    hid_t space = H5Screate_simple(1, &rows, nullptr);
    hid_t set = H5Dcreate2(file, "/items", H5T_NATIVE_INT, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(set);
    H5Sclose(space);
  }));
  // Attributes quoted in messages that are not a version number or a key (megabytes of text).
  hostile.push_back(make("version_text.h5", [&](hid_t file) {
    string_attribute(file, "format_version", std::to_string(kStateFileFormatVersion + 1) + std::string(10000, 'x'), 1);
  }));
  hostile.push_back(make("fingerprint_text.h5", [&](hid_t file) {
    string_attribute(file, "format_version", std::to_string(kStateFileFormatVersion), 1);
    string_attribute(file, "fingerprint", std::string(20000, 'k') + "\n", 1);  // under HDF5's 64 KiB header
    string_attribute(file, "inputs", "{}", 1);
    items(file, 2);
    hidden(file, "text", {2, 1, 3}, H5T_IEEE_F32LE);
  }));
  // Hidden states checked before they are read, each refusal naming the dataset: what HDF5 would
  // convert silently (integers, doubles), other ranks, tables whose layers disagree with each
  // other or with the 'inputs' attribute, and a table that claims more than the file stores.
  std::vector<std::filesystem::path> hostile_states;
  hostile_states.push_back(make("hidden_int.h5", [&](hid_t file) {
    good_attributes(file);
    items(file, 2);
    hidden(file, "text", {2, 1, 3}, H5T_NATIVE_INT);
  }));
  hostile_states.push_back(make("hidden_double.h5", [&](hid_t file) {
    good_attributes(file);
    items(file, 2);
    hidden(file, "text", {2, 1, 3}, H5T_IEEE_F64LE);
  }));
  // IEEE half precision: a 16-bit float that is not bfloat16, which HDF5 would convert.
  hostile_states.push_back(make("hidden_half.h5", [&](hid_t file) {
    good_attributes(file);
    items(file, 2);
    hid_t half = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(half, 15, 10, 5, 0, 10);
    H5Tset_precision(half, 16);
    H5Tset_size(half, 2);
    H5Tset_ebias(half, 15);
    hidden(file, "text", {2, 1, 3}, half);
    H5Tclose(half);
  }));
  hostile_states.push_back(make("hidden_vs_dtype.h5", [&](hid_t file) {
    attributes_with_inputs(file, R"({"dtype": "bfloat16"})");
    items(file, 2);
    hidden(file, "text", {2, 2, 4}, H5T_IEEE_F32LE);
  }));
  hostile_states.push_back(make("hidden_dtypes_disagree.h5", [&](hid_t file) {
    good_attributes(file);
    items(file, 2);
    hidden(file, "text", {2, 2, 4}, H5T_IEEE_F32LE);
    hid_t bf16 = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(bf16, 15, 7, 8, 0, 7);
    H5Tset_precision(bf16, 16);
    H5Tset_size(bf16, 2);
    hidden(file, "image", {2, 2, 4}, bf16);
    H5Tclose(bf16);
  }));
  hostile_states.push_back(make("hidden_2d.h5", [&](hid_t file) {
    good_attributes(file);
    items(file, 2);
    hidden(file, "text", {2, 3}, H5T_IEEE_F32LE);
  }));
  hostile_states.push_back(make("hidden_layers_disagree.h5", [&](hid_t file) {
    good_attributes(file);
    items(file, 2);
    hidden(file, "text", {2, 3, 4}, H5T_IEEE_F32LE);
    hidden(file, "image", {2, 2, 4}, H5T_IEEE_F32LE);
  }));
  hostile_states.push_back(make("hidden_vs_kept_layers.h5", [&](hid_t file) {
    attributes_with_inputs(file, R"({"kept_layers": [0, 1, 2]})");
    items(file, 2);
    hidden(file, "text", {2, 2, 4}, H5T_IEEE_F32LE);
  }));
  hostile_states.push_back(make("hidden_vs_item_count.h5", [&](hid_t file) {
    attributes_with_inputs(file, R"({"items": {"count": 5}})");
    items(file, 2);
    hidden(file, "text", {2, 2, 4}, H5T_IEEE_F32LE);
  }));
  hostile_states.push_back(make("hidden_vs_hidden_size.h5", [&](hid_t file) {
    attributes_with_inputs(file, R"({"image": {"config": {"hidden_size": 768}}})");
    items(file, 2);
    hidden(file, "image", {2, 2, 4}, H5T_IEEE_F32LE);
  }));
  hostile_states.push_back(make("hidden_unstored.h5", [&](hid_t file) {
    good_attributes(file);
    items(file, 2);
    hidden(file, "text", {2, 16, 1024}, H5T_IEEE_F32LE, /*written=*/false);
  }));
  // /items as variable-length strings (format 1): they live in HDF5's global heap, whose damaged
  // records HDF5 follows out of bounds; refused before anything of them is read.
  hostile.push_back(make("items_variable_length.h5", [&](hid_t file) {
    good_attributes(file);
    const hsize_t rows = 2;
    hid_t space = H5Screate_simple(1, &rows, nullptr);
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    hid_t set = H5Dcreate2(file, "/items", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const char* ids[2] = {"", "A"};
    H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids);
    H5Dclose(set);
    H5Tclose(type);
    H5Sclose(space);
  }));
  for (const auto& path : hostile) {
    try {
      ReadStateFile(path);
      ADD_FAILURE() << path << " was read";
    } catch (const CacheError& error) {
      EXPECT_NE(std::string(error.what()).find(path.filename().string()), std::string::npos) << error.what();
      EXPECT_LT(std::string(error.what()).size(), 1000u) << "an attribute's text was quoted";
    }
  }
  for (const auto& path : hostile_states) {
    try {
      ReadStateFile(path);
      ADD_FAILURE() << path << " was read";
    } catch (const CacheError& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find(path.filename().string()), std::string::npos) << message;
      EXPECT_NE(message.find("hidden"), std::string::npos) << message;
      EXPECT_NE(message.find("not an iisan cache"), std::string::npos) << message;
    }
  }
  // The same checks pass what the writer writes.
  const auto good = dir / "good.h5";
  {
    StateFileWriter writer(good, {"", "A"}, 2, 4, 4);
    writer.WriteRows("text", 1, torch::ones({1, 2, 4}));
    writer.WriteRows("image", 1, torch::ones({1, 2, 4}));
    writer.Commit("0123456789abcdef", {{"kept_layers", {0, 2}}, {"items", {{"count", 1}}},
                                       {"text", {{"config", {{"hidden_size", 4}}}}}});
  }
  EXPECT_EQ(ReadStateFile(good).text.sizes(), torch::IntArrayRef({2, 2, 4}));
}

}  // namespace
}  // namespace iisan::cache
