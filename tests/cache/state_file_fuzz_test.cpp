// The HDF5 state file under fuzzing (tests/fuzz_mutator.h): the bytes of small valid caches are
// damaged on disk (bit flips, overwritten counts and offsets, inserts, deletes, truncation);
// reading one either gives tables of the shapes its header states or raises a CacheError that
// names the file; nothing else escapes, nothing crashes or hangs.
#include "cache/state_file.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include <unistd.h>

#include <gtest/gtest.h>
#include <hdf5.h>
#include <torch/torch.h>

#include "tests/core/data/test_files.h"
#include "tests/fuzz_mutator.h"

namespace iisan::cache {
namespace {

namespace fs = std::filesystem;
using iisan::testing::FuzzMutator;
using iisan::testing::FuzzRequire;
using iisan::testing::RunFuzz;
using data::testing::ReadBytes;

// A committed cache of `items` with the given tables, as bytes.
std::string ValidCache(const fs::path& dir, const std::vector<std::string>& items, int64_t kept, int64_t text_dim,
                       int64_t image_dim) {
  const auto path = dir / "seed.h5";
  torch::manual_seed(static_cast<uint64_t>(items.size()));
  {
    StateFileWriter writer(path, items, kept, text_dim, image_dim);
    const int64_t rows = static_cast<int64_t>(items.size()) - 1;
    if (text_dim > 0) writer.WriteRows("text", 1, torch::randn({rows, kept, text_dim}));
    if (image_dim > 0) writer.WriteRows("image", 1, torch::randn({rows, kept, image_dim}));
    writer.Commit("0123456789abcdef", {{"kept_layers", {0, 2}}, {"items", rows}});
  }
  return ReadBytes(path);
}

// Reads the whole cache, and a few row ranges through the reader, checking what the trainer
// and `iisan cache verify` rely on.
void ReadAndCheck(const fs::path& path) {
  const StateFile file = ReadStateFile(path);
  const auto rows = static_cast<int64_t>(file.items.size());
  FuzzRequire(file.format_version == kStateFileFormatVersion, "the format version this build reads");
  int64_t kept = -1;
  for (const auto* table : {&file.text, &file.image}) {
    if (!table->defined()) continue;
    FuzzRequire(table->dim() == 3 && table->size(0) == rows, "a table of one row per item");
    FuzzRequire(kept < 0 || table->size(1) == kept, "both tables hold the same layers");
    kept = table->size(1);
  }
  const StateFileReader reader(path);
  for (const char* modality : {"text", "image"}) {
    const int64_t dim = std::string(modality) == "text" ? reader.header().text_dim : reader.header().image_dim;
    if (dim == 0 || rows == 0) continue;
    const auto slab = reader.ReadRows(modality, rows / 2, rows - rows / 2);
    FuzzRequire(slab.size(0) == rows - rows / 2 && slab.size(1) == reader.header().kept_layers && slab.size(2) == dim,
                "ReadRows returns the rows asked for");
  }
}

// Every HDF5 object the reader opened is closed again, whether it read the file or refused it:
// one left open keeps its file, and the file's metadata, in memory until the process ends.
void RequireNoOpenHdf5Objects() {
  const auto open = [](unsigned kinds) { return H5Fget_obj_count(static_cast<hid_t>(H5F_OBJ_ALL), kinds); };
  if (open(H5F_OBJ_ALL) != 0) {
    throw iisan::testing::FuzzInvariantError(
        "HDF5 objects left open: " + std::to_string(open(H5F_OBJ_ALL)) + " (files " +
        std::to_string(open(H5F_OBJ_FILE)) + ", datasets " + std::to_string(open(H5F_OBJ_DATASET)) + ", groups " +
        std::to_string(open(H5F_OBJ_GROUP)) + ", types " + std::to_string(open(H5F_OBJ_DATATYPE)) + ", attributes " +
        std::to_string(open(H5F_OBJ_ATTR)) + ")");
  }
}

TEST(StateFileFuzzTest, DamagedCachesReadConsistentlyOrNameTheFile) {
  // This process's own folder: ctest runs test processes side by side, and a second run of the
  // suite (another build) may share the temp folder.
  const auto dir = fs::path(::testing::TempDir()) / ("state_file_fuzz_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  // No free lists: HDF5 then mallocs and frees each block itself, so that LeakSanitizer (`make
  // sanitize`) names the call that allocated a leaked block, not the first call that allocated
  // a recycled one (the suppression of HDF5's own leaks in tests/sanitizers/lsan.supp matches
  // the allocating call).
  ASSERT_GE(H5set_free_list_limits(0, 0, 0, 0, 0, 0), 0);
  FuzzMutator mutator(401, {ValidCache(dir, {"", "A1", "B2", "C3", "D4", "E5"}, 2, 4, 3),
                            ValidCache(dir, {"", "only"}, 1, 8, 0), ValidCache(dir, {"", "x", "y"}, 3, 0, 2)});
  const auto path = dir / "case.h5";
  const auto outcome = RunFuzz<CacheError>(
      mutator, 1500,
      [&](const std::string& bytes) {
        std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
        try {
          ReadAndCheck(path);
        } catch (...) {
          RequireNoOpenHdf5Objects();
          throw;
        }
        RequireNoOpenHdf5Objects();
      },
      [&](const CacheError& error) {
        const std::string message = error.what();
        return message.rfind(path.string() + ": ", 0) == 0 ? "" : "the CacheError does not name the file: " + message;
      });
  EXPECT_GT(outcome.parsed, 0);
  EXPECT_GT(outcome.refused, 0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace iisan::cache
