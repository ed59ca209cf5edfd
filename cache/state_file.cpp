// HDF5 reading and writing of cached states through the C API (no C++ HDF5 bindings needed).
#include "cache/state_file.h"
#include "core/data/json_input.h"

#include <hdf5.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <optional>

#include <mutex>
#include <utility>

#include <glog/logging.h>
#include <torch/torch.h>

namespace iisan::cache {
namespace {

// The service reads and writes caches from several threads. A thread-safe HDF5 build (Debian's
// is) serialises its calls itself; with any other build, this lock does it for us.
#ifdef H5_HAVE_THREADSAFE
struct Hdf5Guard {};
#else
std::recursive_mutex& Hdf5Mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}
struct Hdf5Guard {
  std::lock_guard<std::recursive_mutex> lock{Hdf5Mutex()};
};
#endif

// HDF5 prints its own error stack on failure; we report errors ourselves with the file name.
void SilenceHdf5() {
  static bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

void Check(herr_t status, const std::string& what, const std::filesystem::path& path) {
  if (status < 0) throw CacheError(path.string() + ": HDF5 failed to " + what);
}

// One HDF5 identifier, closed with its kind's close function when it goes out of scope, on
// every path (an error thrown halfway included): an identifier left open keeps its object and
// file open, with the file's metadata, until the process ends.
class Hdf5Id {
 public:
  using CloseFunction = herr_t (*)(hid_t);
  Hdf5Id(hid_t id, CloseFunction close) : id_(id), close_(close) {}
  Hdf5Id(Hdf5Id&& other) noexcept : id_(std::exchange(other.id_, -1)), close_(other.close_) {}
  Hdf5Id(const Hdf5Id&) = delete;
  Hdf5Id& operator=(const Hdf5Id&) = delete;
  Hdf5Id& operator=(Hdf5Id&&) = delete;
  ~Hdf5Id() { Close(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now; the status of the close function (0 when there was nothing to close).
  herr_t Close() { return id_ >= 0 ? close_(std::exchange(id_, -1)) : 0; }
  // Hands the identifier to an owner that closes it itself.
  hid_t Release() { return std::exchange(id_, -1); }

 private:
  hid_t id_;
  CloseFunction close_;
};

// An identifier that must be valid: a negative one (HDF5's failure) is a CacheError.
Hdf5Id CheckId(hid_t id, Hdf5Id::CloseFunction close, const std::string& what, const std::filesystem::path& path) {
  if (id < 0) throw CacheError(path.string() + ": HDF5 failed to " + what);
  return Hdf5Id(id, close);
}

// A fixed-length, null-padded string type of `size` bytes.
Hdf5Id FixedStringType(size_t size, const std::filesystem::path& path) {
  Hdf5Id type = CheckId(H5Tcopy(H5T_C_S1), H5Tclose, "copy a string type", path);
  Check(H5Tset_size(type.get(), size), "size a string type", path);
  Check(H5Tset_strpad(type.get(), H5T_STR_NULLPAD), "pad a string type", path);
  return type;
}

// bfloat16 as HDF5 describes it: a float32 type cut to its upper 16 bits (sign bit 15, exponent
// bits 7..14 with float32's bias, mantissa bits 0..6). `base`: H5T_IEEE_F32LE for the file,
// H5T_NATIVE_FLOAT for memory (then it is c10::BFloat16's layout in this host's byte order).
Hdf5Id Bfloat16Type(hid_t base, const std::filesystem::path& path) {
  Hdf5Id type = CheckId(H5Tcopy(base), H5Tclose, "copy a float type", path);
  Check(H5Tset_fields(type.get(), 15, 7, 8, 0, 7), "lay out a bfloat16 type", path);
  Check(H5Tset_precision(type.get(), 16), "set the precision of a bfloat16 type", path);
  Check(H5Tset_size(type.get(), 2), "size a bfloat16 type", path);
  Check(H5Tset_ebias(type.get(), 127), "set the exponent bias of a bfloat16 type", path);
  return type;
}

bool IsBfloat16(hid_t type) {
  if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != 2 || H5Tget_precision(type) != 16 ||
      H5Tget_offset(type) != 0 || H5Tget_ebias(type) != 127) {
    return false;
  }
  size_t sign = 0, exponent = 0, exponent_bits = 0, mantissa = 0, mantissa_bits = 0;
  if (H5Tget_fields(type, &sign, &exponent, &exponent_bits, &mantissa, &mantissa_bits) < 0) return false;
  return sign == 15 && exponent == 7 && exponent_bits == 8 && mantissa == 0 && mantissa_bits == 7;
}

// The type of the tables' elements in a file (`in_file`) or in this host's memory.
Hdf5Id StateType(torch::ScalarType dtype, bool in_file, const std::filesystem::path& path) {
  const hid_t base = in_file ? H5T_IEEE_F32LE : H5T_NATIVE_FLOAT;
  if (dtype == torch::kBFloat16) return Bfloat16Type(base, path);
  return CheckId(H5Tcopy(base), H5Tclose, "copy a float type", path);
}

const char* StateDtypeName(torch::ScalarType dtype) { return dtype == torch::kBFloat16 ? "bfloat16" : "float32"; }

void WriteStringAttribute(hid_t object, const std::string& name, const std::string& value,
                          const std::filesystem::path& path) {
  const Hdf5Id type = FixedStringType(std::max<size_t>(1, value.size()), path);
  const Hdf5Id space = CheckId(H5Screate(H5S_SCALAR), H5Sclose, "create a scalar dataspace", path);
  const Hdf5Id attr = CheckId(H5Acreate2(object, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                              H5Aclose, "create attribute " + name, path);
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  Check(H5Awrite(attr.get(), type.get(), padded.data()), "write attribute " + name, path);
}

std::string ReadStringAttribute(hid_t object, const std::string& name, const std::filesystem::path& path) {
  if (H5Aexists(object, name.c_str()) <= 0) {
    throw CacheError(path.string() + ": attribute '" + name + "' is missing; this is not an iisan cache "
                     "or it was not completed. Delete it and run `iisan cache build` again.");
  }
  const Hdf5Id attr = CheckId(H5Aopen(object, name.c_str(), H5P_DEFAULT), H5Aclose, "open attribute " + name, path);
  const Hdf5Id type = CheckId(H5Aget_type(attr.get()), H5Tclose, "get the type of attribute " + name, path);
  // One fixed-length string, at most 16 MiB: anything else is not ours, and reading it into one
  // string's bytes would overrun them.
  const Hdf5Id space = CheckId(H5Aget_space(attr.get()), H5Sclose, "get the dataspace of attribute " + name, path);
  const hssize_t points = H5Sget_simple_extent_npoints(space.get());
  const size_t size = H5Tget_size(type.get());
  if (H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) != 0 || points != 1 || size == 0 ||
      size > (size_t{16} << 20)) {
    throw CacheError(path.string() + ": attribute '" + name + "' is not one fixed-length string of at most 16 MiB; "
                     "this is not an iisan cache (or a damaged one): delete it and run `iisan cache build` again");
  }
  std::string value(size, '\0');
  const Hdf5Id memtype = FixedStringType(value.size(), path);
  Check(H5Aread(attr.get(), memtype.get(), value.data()), "read attribute " + name, path);
  while (!value.empty() && value.back() == '\0') value.pop_back();
  return value;
}

}  // namespace

StateFileWriter::StateFileWriter(std::filesystem::path final_path, const std::vector<std::string>& items,
                                 int64_t kept_layers, int64_t text_dim, int64_t image_dim, torch::ScalarType dtype)
    : final_path_(std::move(final_path)), dtype_(dtype) {
  [[maybe_unused]] Hdf5Guard guard;
  SilenceHdf5();
  if (dtype_ != torch::kFloat32 && dtype_ != torch::kBFloat16) {
    throw CacheError(final_path_.string() + ": a cache stores float32 or bfloat16 states, not " +
                     c10::toString(dtype_));
  }
  if (final_path_.has_parent_path()) std::filesystem::create_directories(final_path_.parent_path());
  // "<final>.tmp.<pid>.<n>": the temporaries of writers killed before they could remove them
  // (kill -9, preemption) are removed by the next writer, here.
  size_t width = 1;
  for (const auto& item : items) width = std::max(width, item.size());
  if (width > static_cast<size_t>(kMaxItemIdBytes)) {
    throw CacheError(final_path_.string() + ": an item id of " + std::to_string(width) +
                     " bytes; a cache holds ids of at most " + std::to_string(kMaxItemIdBytes));
  }
  file_on_disk_ = std::make_unique<data::AtomicFile>(final_path_);
  temp_path_ = file_on_disk_->temp_path();
  data::RemoveTemporariesOfDeadWriters(final_path_);
  // The 1.8 file format and later checksum every piece of metadata (superblock, object headers,
  // B-trees, heaps): a damaged file fails HDF5's checks instead of leading its parser astray.
  // The file stays ours (closed on an error below) until the constructor completes: a
  // constructor that throws runs no destructor.
  Hdf5Id file = [&] {
    const Hdf5Id access = CheckId(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "create file access properties", temp_path_);
    Check(H5Pset_libver_bounds(access.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST), "choose the 1.8 file format",
          temp_path_);
    return CheckId(H5Fcreate(temp_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access.get()), H5Fclose, "create the file",
                   temp_path_);
  }();

  const hsize_t rows = items.size();
  for (const auto& [name, dim] : {std::pair{"text", text_dim}, std::pair{"image", image_dim}}) {
    if (dim <= 0) continue;
    const Hdf5Id group =
        CheckId(H5Gcreate2(file.get(), (std::string("/") + name).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                H5Gclose, std::string("create group ") + name, temp_path_);
    const hsize_t dims[3] = {rows, static_cast<hsize_t>(kept_layers), static_cast<hsize_t>(dim)};
    const Hdf5Id space = CheckId(H5Screate_simple(3, dims, nullptr), H5Sclose,
                                 std::string("create the dataspace of ") + name, temp_path_);
    // Chunks of whole rows: the trainer reads the whole table, the builder writes row ranges.
    const Hdf5Id plist = CheckId(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "create dataset properties", temp_path_);
    const hsize_t chunk[3] = {std::min<hsize_t>(rows, 256), dims[1], dims[2]};
    Check(H5Pset_chunk(plist.get(), 3, chunk), std::string("chunk ") + name + "/hidden", temp_path_);
    // Each chunk checksummed: damaged rows fail to read, never pass as states.
    Check(H5Pset_fletcher32(plist.get()), std::string("checksum ") + name + "/hidden", temp_path_);
    const float zero = 0.0f;
    Check(H5Pset_fill_value(plist.get(), H5T_NATIVE_FLOAT, &zero), std::string("fill ") + name + "/hidden", temp_path_);
    // Created, then closed at once (the temporary's end): WriteRows opens it by name.
    const Hdf5Id type = StateType(dtype_, /*in_file=*/true, temp_path_);
    CheckId(H5Dcreate2(group.get(), "hidden", type.get(), space.get(), H5P_DEFAULT, plist.get(), H5P_DEFAULT),
            H5Dclose, std::string("create dataset ") + name + "/hidden", temp_path_);
  }

  // Item ids as fixed-length strings in checksummed chunks. (Variable-length strings live in
  // HDF5's global heap, whose damaged records HDF5 1.10 follows out of bounds: a crash.)
  std::string packed(items.size() * width, '\0');
  for (size_t i = 0; i < items.size(); ++i) std::copy(items[i].begin(), items[i].end(), packed.begin() + i * width);
  const Hdf5Id str_type = FixedStringType(width, temp_path_);
  const hsize_t item_dims[1] = {rows};
  const Hdf5Id item_space =
      CheckId(H5Screate_simple(1, item_dims, nullptr), H5Sclose, "create the dataspace of items", temp_path_);
  const Hdf5Id item_plist = CheckId(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "create dataset properties", temp_path_);
  const hsize_t item_chunk[1] = {std::max<hsize_t>(1, std::min<hsize_t>(rows, 4096))};
  Check(H5Pset_chunk(item_plist.get(), 1, item_chunk), "chunk items", temp_path_);
  Check(H5Pset_fletcher32(item_plist.get()), "checksum items", temp_path_);
  const Hdf5Id item_set = CheckId(
      H5Dcreate2(file.get(), "/items", str_type.get(), item_space.get(), H5P_DEFAULT, item_plist.get(), H5P_DEFAULT),
      H5Dclose, "create dataset items", temp_path_);
  Check(H5Dwrite(item_set.get(), str_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, packed.data()), "write items",
        temp_path_);
  file_ = file.Release();
}

StateFileWriter::~StateFileWriter() {
  [[maybe_unused]] Hdf5Guard guard;
  if (committed_) return;
  if (file_ >= 0) H5Fclose(file_);
  file_on_disk_.reset();  // removes the temporary
}

void StateFileWriter::WriteRows(const std::string& modality, int64_t row_begin, const torch::Tensor& rows_in) {
  [[maybe_unused]] Hdf5Guard guard;
  auto rows = rows_in.to(torch::kCPU, dtype_).contiguous();
  const Hdf5Id dataset = CheckId(H5Dopen2(file_, ("/" + modality + "/hidden").c_str(), H5P_DEFAULT), H5Dclose,
                                 "open " + modality + "/hidden", temp_path_);
  const Hdf5Id file_space =
      CheckId(H5Dget_space(dataset.get()), H5Sclose, "get the dataspace of " + modality + "/hidden", temp_path_);
  hsize_t dims[3];
  if (H5Sget_simple_extent_ndims(file_space.get()) != 3) {
    throw CacheError(temp_path_.string() + ": " + modality + "/hidden is not 3-D");
  }
  Check(H5Sget_simple_extent_dims(file_space.get(), dims, nullptr), "get the size of " + modality + "/hidden",
        temp_path_);
  if (rows.dim() != 3 || rows.size(1) != static_cast<int64_t>(dims[1]) || rows.size(2) != static_cast<int64_t>(dims[2]) ||
      row_begin + rows.size(0) > static_cast<int64_t>(dims[0])) {
    throw CacheError(temp_path_.string() + ": rows of shape " + c10::str(rows.sizes()) + " at row " +
                     std::to_string(row_begin) + " do not fit " + modality + "/hidden");
  }
  const hsize_t start[3] = {static_cast<hsize_t>(row_begin), 0, 0};
  const hsize_t count[3] = {static_cast<hsize_t>(rows.size(0)), dims[1], dims[2]};
  Check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
        "select rows of " + modality, temp_path_);
  const Hdf5Id mem_space =
      CheckId(H5Screate_simple(3, count, nullptr), H5Sclose, "create a memory dataspace", temp_path_);
  const Hdf5Id mem_type = StateType(dtype_, /*in_file=*/false, temp_path_);
  Check(H5Dwrite(dataset.get(), mem_type.get(), mem_space.get(), file_space.get(), H5P_DEFAULT, rows.data_ptr()),
        "write rows of " + modality, temp_path_);
}

void StateFileWriter::Commit(const std::string& fingerprint, const nlohmann::json& inputs) {
  [[maybe_unused]] Hdf5Guard guard;
  WriteStringAttribute(file_, "format_version", std::to_string(kStateFileFormatVersion), temp_path_);
  WriteStringAttribute(file_, "fingerprint", fingerprint, temp_path_);
  WriteStringAttribute(file_, "inputs", inputs.dump(), temp_path_);
  Check(H5Fflush(file_, H5F_SCOPE_GLOBAL), "flush", temp_path_);
  Check(H5Fclose(file_), "close", temp_path_);
  file_ = -1;
  try {
    file_on_disk_->Commit();  // fsync, rename over final_path_, fsync the folder
  } catch (const data::FileWriteError& error) {
    throw CacheError(error.what());
  }
  committed_ = true;
}

struct HiddenShape {
  int64_t layers = 0;
  int64_t width = 0;
  torch::ScalarType dtype = torch::kFloat32;
};

// Checks /<modality>/hidden before anything of it is read: 32-bit floats or bfloat16 (what the
// writer writes: HDF5 would silently convert integers, doubles or other 16-bit floats), agreeing
// with the 'inputs' attribute's dtype where it records one, [rows, K, D] with K and D in sane
// ranges and agreeing with the 'inputs' attribute where it records them (kept layers, item count,
// the backbone's hidden size), and as many bytes stored as that shape needs, so that a small
// file claiming a huge table is refused rather than allocated for.
HiddenShape CheckHiddenStates(hid_t file, const std::string& modality, hsize_t rows, const nlohmann::json& inputs,
                              const std::filesystem::path& path) {
  const std::string dataset_path = "/" + modality + "/hidden";
  auto refuse = [&](const std::string& what) {
    return CacheError(path.string() + ": dataset " + dataset_path + " " + what + "; this is not an iisan cache (or a "
                      "damaged one): delete it and run `iisan cache build` again");
  };
  bool float32 = false, bfloat16 = false;
  hsize_t dims[3] = {0, 0, 0};
  int ndims = 0;
  hsize_t stored = 0;
  {
    const Hdf5Id dataset =
        CheckId(H5Dopen2(file, dataset_path.c_str(), H5P_DEFAULT), H5Dclose, "open " + dataset_path, path);
    const Hdf5Id type = CheckId(H5Dget_type(dataset.get()), H5Tclose, "get the type of " + dataset_path, path);
    float32 = H5Tget_class(type.get()) == H5T_FLOAT && H5Tget_size(type.get()) == 4;
    bfloat16 = IsBfloat16(type.get());
    const Hdf5Id space = CheckId(H5Dget_space(dataset.get()), H5Sclose, "get the dataspace of " + dataset_path, path);
    ndims = H5Sget_simple_extent_ndims(space.get());
    if (ndims == 3 && H5Sget_simple_extent_dims(space.get(), dims, nullptr) < 0) ndims = -1;
    stored = H5Dget_storage_size(dataset.get());
  }
  if (!float32 && !bfloat16) throw refuse("holds neither 32-bit floats nor bfloat16");
  const auto dtype = bfloat16 ? torch::kBFloat16 : torch::kFloat32;
  if (inputs.is_object() && inputs.contains("dtype") && inputs.at("dtype") != StateDtypeName(dtype)) {
    throw refuse(std::string("holds ") + StateDtypeName(dtype) + ", which disagrees with the attribute 'inputs' (dtype)");
  }
  if (ndims != 3) throw refuse("is not 3-D (" + std::to_string(ndims) + " dimensions)");
  if (dims[1] == 0 || dims[1] > static_cast<hsize_t>(kMaxKeptLayers) || dims[2] == 0 ||
      dims[2] > static_cast<hsize_t>(kMaxStateWidth)) {
    throw refuse("has " + std::to_string(dims[1]) + " layers of width " + std::to_string(dims[2]));
  }
  if (dims[0] != rows) {
    throw refuse("has " + std::to_string(dims[0]) + " rows but /items has " + std::to_string(rows));
  }
  // At most kMaxCacheRows (checked with /items) x kMaxKeptLayers x kMaxStateWidth x 4 bytes = 2^61:
  // no overflow.
  static_assert(kMaxCacheRows <= (int64_t{1} << 31) && kMaxKeptLayers <= 4096 && kMaxStateWidth <= 65536);
  const hsize_t needed = dims[0] * dims[1] * dims[2] * c10::elementSize(dtype);
  if (stored < needed) {
    throw refuse("stores " + std::to_string(stored) + " bytes but its shape needs " + std::to_string(needed) +
                 " (truncated?)");
  }
  // What the 'inputs' attribute records of the shape, where it records it.
  const auto recorded = [&](const nlohmann::json::json_pointer& pointer) -> std::optional<int64_t> {
    if (!inputs.contains(pointer)) return std::nullopt;
    const auto& value = inputs.at(pointer);
    if (value.is_array()) return static_cast<int64_t>(value.size());
    if (value.is_number_integer()) return value.get<int64_t>();
    return -1;  // recorded, but not as a count: agrees with nothing
  };
  const std::pair<nlohmann::json::json_pointer, int64_t> checks[] = {
      {nlohmann::json::json_pointer("/kept_layers"), static_cast<int64_t>(dims[1])},
      {nlohmann::json::json_pointer("/items/count"), static_cast<int64_t>(dims[0]) - 1},
      {nlohmann::json::json_pointer("/" + modality + "/config/hidden_size"), static_cast<int64_t>(dims[2])}};
  for (const auto& [pointer, actual] : checks) {
    const auto expected = recorded(pointer);
    if (expected && *expected != actual) {
      throw refuse("has shape [" + std::to_string(dims[0]) + ", " + std::to_string(dims[1]) + ", " +
                   std::to_string(dims[2]) + "], which disagrees with the attribute 'inputs' (" +
                   pointer.to_string().substr(1) + ")");
    }
  }
  return {static_cast<int64_t>(dims[1]), static_cast<int64_t>(dims[2]), dtype};
}

StateFileReader::StateFileReader(const std::filesystem::path& path) : path_(path) {
  [[maybe_unused]] Hdf5Guard guard;
  SilenceHdf5();
  if (!std::filesystem::exists(path)) {
    throw CacheError(path.string() + ": no such cache file; run `iisan cache build` first");
  }
  // Ours until the constructor completes: closed, with everything opened below, on a refusal.
  Hdf5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.valid()) {
    throw CacheError(path.string() + ": not a readable HDF5 file (truncated or corrupt?); delete it and "
                     "run `iisan cache build` again");
  }
  {
    // Both attributes are quoted in messages: a version is a few digits, a key a few letters and
    // digits, or the file is not ours.
    const std::string version = ReadStringAttribute(file.get(), "format_version", path);
    if (version.empty() || version.size() > 9 || version.find_first_not_of("0123456789") != std::string::npos) {
      throw CacheError(path.string() + ": attribute 'format_version' is not a version number; this is not an iisan "
                       "cache (or a damaged one): delete it and run `iisan cache build` again");
    }
    header_.format_version = std::stoi(version);
    if (header_.format_version != kStateFileFormatVersion) {
      throw CacheError(path.string() + ": cache format version " + version + ", this build reads version " +
                       std::to_string(kStateFileFormatVersion) + "; rebuild the cache");
    }
    header_.fingerprint = ReadStringAttribute(file.get(), "fingerprint", path);
    if (header_.fingerprint.size() > 64 ||
        !std::all_of(header_.fingerprint.begin(), header_.fingerprint.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)); })) {
      throw CacheError(path.string() + ": attribute 'fingerprint' is not a cache key; this is not an iisan cache "
                       "(or a damaged one): delete it and run `iisan cache build` again");
    }
    try {
      header_.inputs =
          data::ParseJsonInput<nlohmann::json>(ReadStringAttribute(file.get(), "inputs", path),
                                               path.string() + " attribute 'inputs'", {size_t{16} << 20, 32});
    } catch (const data::InputError&) {
      throw CacheError(path.string() + ": attribute 'inputs' is not JSON (or nests too deep); rebuild the cache");
    }

    const Hdf5Id item_set = CheckId(H5Dopen2(file.get(), "/items", H5P_DEFAULT), H5Dclose, "open items", path);
    hsize_t rows = 0;
    // Checked before anything is read or allocated: one dimension of at most kMaxCacheRows
    // fixed-length strings of at most kMaxItemIdBytes.
    const Hdf5Id item_type = CheckId(H5Dget_type(item_set.get()), H5Tclose, "get the type of items", path);
    const bool strings = H5Tget_class(item_type.get()) == H5T_STRING && H5Tis_variable_str(item_type.get()) == 0;
    const size_t width = strings ? H5Tget_size(item_type.get()) : 0;
    const Hdf5Id item_space = CheckId(H5Dget_space(item_set.get()), H5Sclose, "get the dataspace of items", path);
    const int ndims = H5Sget_simple_extent_ndims(item_space.get());
    if (ndims == 1 && H5Sget_simple_extent_dims(item_space.get(), &rows, nullptr) < 0) rows = 0;
    if (ndims != 1 || !strings || width == 0 || width > static_cast<size_t>(kMaxItemIdBytes) ||
        rows > static_cast<hsize_t>(kMaxCacheRows)) {
      throw CacheError(path.string() + ": /items is not a 1-D dataset of at most " + std::to_string(kMaxCacheRows) +
                       " fixed-length strings of at most " + std::to_string(kMaxItemIdBytes) +
                       " bytes; this is not an iisan cache");
    }
    std::string packed;
    try {
      packed.resize(rows * width);
    } catch (const std::bad_alloc&) {
      throw CacheError(path.string() + ": /items claims " + std::to_string(rows) + " ids of " + std::to_string(width) +
                       " bytes, more than this host can hold");
    }
    const Hdf5Id str_type = FixedStringType(width, path);
    Check(H5Dread(item_set.get(), str_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, packed.data()),
          "read items (truncated or damaged file?)", path);
    header_.items.reserve(rows);
    for (hsize_t row = 0; row < rows; ++row) {
      std::string_view id(packed.data() + row * width, width);
      while (!id.empty() && id.back() == '\0') id.remove_suffix(1);
      header_.items.emplace_back(id);
    }

    for (const std::string name : {"text", "image"}) {
      if (H5Lexists(file.get(), ("/" + name).c_str(), H5P_DEFAULT) <= 0) continue;
      const auto shape = CheckHiddenStates(file.get(), name, rows, header_.inputs, path);
      // The tables are read with one layer count and dtype (ReadRows): the writer gives both the same.
      if (header_.kept_layers != 0 && header_.kept_layers != shape.layers) {
        throw CacheError(path.string() + ": /text/hidden has " + std::to_string(header_.kept_layers) +
                         " layers but /image/hidden " + std::to_string(shape.layers) + "; this is not an iisan cache");
      }
      if (header_.kept_layers != 0 && header_.dtype != shape.dtype) {
        throw CacheError(path.string() + ": /text/hidden holds " + StateDtypeName(header_.dtype) + " but /image/hidden " +
                         StateDtypeName(shape.dtype) + "; this is not an iisan cache");
      }
      header_.kept_layers = shape.layers;
      header_.dtype = shape.dtype;
      (name == "text" ? header_.text_dim : header_.image_dim) = shape.width;
    }
  }
  file_ = file.Release();
}

StateFileReader::~StateFileReader() {
  [[maybe_unused]] Hdf5Guard guard;
  if (file_ >= 0) H5Fclose(file_);
}

int64_t StateFileReader::CheckRows(const std::string& modality, int64_t row_begin, int64_t count) const {
  const int64_t dim = modality == "text" ? header_.text_dim : modality == "image" ? header_.image_dim : 0;
  const auto rows = static_cast<int64_t>(header_.items.size());
  if (dim == 0) throw CacheError(path_.string() + ": holds no " + modality + " states");
  if (row_begin < 0 || count < 0 || row_begin + count > rows) {
    throw CacheError(path_.string() + ": rows " + std::to_string(row_begin) + ".." + std::to_string(row_begin + count) +
                     " are outside the " + std::to_string(rows) + " rows of " + modality);
  }
  return dim;
}

torch::Tensor StateFileReader::ReadRows(const std::string& modality, int64_t row_begin, int64_t count) const {
  const int64_t dim = CheckRows(modality, row_begin, count);
  torch::Tensor tensor;
  try {
    tensor = torch::empty({count, header_.kept_layers, dim}, header_.dtype);
  } catch (const std::exception&) {  // std::bad_alloc, or c10::Error for an allocation refused
    throw CacheError(path_.string() + ": " + std::to_string(count) + " rows of " + modality + " (" +
                     std::to_string(header_.kept_layers) + " x " + std::to_string(dim) + " " +
                     StateDtypeName(header_.dtype) + " each) are more than this host can hold; read them in slabs");
  }
  ReadRowsInto(modality, row_begin, tensor);
  return tensor;
}

void StateFileReader::ReadRowsInto(const std::string& modality, int64_t row_begin, const torch::Tensor& out) const {
  [[maybe_unused]] Hdf5Guard guard;
  const int64_t count = out.dim() == 3 ? out.size(0) : 0;
  const int64_t dim = CheckRows(modality, row_begin, count);
  if (out.dim() != 3 || out.size(1) != header_.kept_layers || out.size(2) != dim || out.scalar_type() != header_.dtype ||
      !out.device().is_cpu() || !out.is_contiguous()) {
    throw std::invalid_argument("StateFileReader::ReadRowsInto: " + path_.string() + " needs a contiguous host tensor "
                                "[n, " + std::to_string(header_.kept_layers) + ", " + std::to_string(dim) + "] of " +
                                StateDtypeName(header_.dtype) + " for its " + modality + " rows");
  }
  if (count == 0) return;
  const std::string dataset_path = "/" + modality + "/hidden";
  const Hdf5Id dataset =
      CheckId(H5Dopen2(file_, dataset_path.c_str(), H5P_DEFAULT), H5Dclose, "open " + dataset_path, path_);
  const Hdf5Id file_space =
      CheckId(H5Dget_space(dataset.get()), H5Sclose, "get the dataspace of " + dataset_path, path_);
  const hsize_t start[3] = {static_cast<hsize_t>(row_begin), 0, 0};
  const hsize_t extent[3] = {static_cast<hsize_t>(count), static_cast<hsize_t>(header_.kept_layers),
                             static_cast<hsize_t>(dim)};
  Check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, extent, nullptr),
        "select rows of " + dataset_path, path_);
  const Hdf5Id mem_space = CheckId(H5Screate_simple(3, extent, nullptr), H5Sclose, "create a memory dataspace", path_);
  const Hdf5Id mem_type = StateType(header_.dtype, /*in_file=*/false, path_);
  Check(H5Dread(dataset.get(), mem_type.get(), mem_space.get(), file_space.get(), H5P_DEFAULT, out.data_ptr()),
        "read " + dataset_path + " (truncated or damaged file?)", path_);
}

StateFileHeader ReadStateFileHeader(const std::filesystem::path& path) { return StateFileReader(path).header(); }

StateFile ReadStateFile(const std::filesystem::path& path) {
  StateFileReader reader(path);
  const auto& header = reader.header();
  StateFile out;
  out.items = header.items;
  out.fingerprint = header.fingerprint;
  out.inputs = header.inputs;
  out.format_version = header.format_version;
  const auto rows = static_cast<int64_t>(header.items.size());
  if (header.text_dim > 0) out.text = reader.ReadRows("text", 0, rows);
  if (header.image_dim > 0) out.image = reader.ReadRows("image", 0, rows);
  return out;
}

}  // namespace iisan::cache
