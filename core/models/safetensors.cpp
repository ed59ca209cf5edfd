// Safetensors reading (the whole header validated before any tensor is handed out, since the
// files come from the internet), the copy-on-write mapping behind the tensors, and the writer.
#include "core/models/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/data/atomic_file.h"
#include "core/data/json_input.h"

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swapping");

namespace iisan::models {

// The whole file, mapped MAP_PRIVATE: pages come from the page cache, shared with other
// processes reading the same backbone, until a tensor viewing them is written to.
struct MappedFile {
  std::byte* data = nullptr;
  uint64_t size = 0;

  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data != nullptr) ::munmap(data, size);
  }
};

namespace {

// The reference implementation's limit; it also bounds the memory a hostile header can cost.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr std::string_view kMetadataKey = "__metadata__";
// Tensor names are echoed in errors; a hostile file's names can be megabytes long.
constexpr size_t kMaxNameInMessage = 200;

struct DtypeSpec {
  std::string_view name;
  uint64_t bytes;
  std::optional<torch::Dtype> torch_dtype;  // none: valid in the format, but no LibTorch type
};

// Every fixed-width dtype of the format. Those without a LibTorch equivalent in all versions we
// build against are still validated, so that a file holding one opens and its others can be read.
constexpr std::array<DtypeSpec, 15> kDtypes = {{
    {"BOOL", 1, torch::kBool},
    {"U8", 1, torch::kUInt8},
    {"I8", 1, torch::kInt8},
    {"I16", 2, torch::kInt16},
    {"I32", 4, torch::kInt32},
    {"I64", 8, torch::kInt64},
    {"F16", 2, torch::kFloat16},
    {"BF16", 2, torch::kBFloat16},
    {"F32", 4, torch::kFloat32},
    {"F64", 8, torch::kFloat64},
    {"U16", 2, std::nullopt},
    {"U32", 4, std::nullopt},
    {"U64", 8, std::nullopt},
    {"F8_E4M3", 1, std::nullopt},
    {"F8_E5M2", 1, std::nullopt},
}};

const DtypeSpec* FindDtype(std::string_view name) {
  for (const auto& spec : kDtypes) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

const DtypeSpec* FindDtype(torch::Dtype dtype) {
  for (const auto& spec : kDtypes) {
    if (spec.torch_dtype == dtype) return &spec;
  }
  return nullptr;
}

std::string DtypeNames(bool readable_only) {
  std::string names;
  for (const auto& spec : kDtypes) {
    if (readable_only && !spec.torch_dtype) continue;
    names += (names.empty() ? "" : ", ") + std::string(spec.name);
  }
  return names;
}

std::string Quoted(std::string_view name) {
  if (name.size() <= kMaxNameInMessage) return "'" + std::string(name) + "'";
  return "'" + std::string(name.substr(0, kMaxNameInMessage)) + "…' (" + std::to_string(name.size()) + " bytes)";
}

// A JSON value for an error message: a shape or offsets (an array of numbers) cut short, since
// hostile values can be megabytes long; anything else by its type and size, never its text.
std::string Excerpt(const nlohmann::json& value) {
  if (!value.is_array() || !std::all_of(value.begin(), value.end(), [](const auto& v) { return v.is_number(); })) {
    return data::DescribeJsonValue(value);
  }
  const std::string text = value.dump();
  return text.size() <= kMaxNameInMessage ? text : text.substr(0, kMaxNameInMessage) + "…";
}

[[noreturn]] void Fail(const std::filesystem::path& path, const std::string& what) {
  throw SafetensorsError(path.string() + ": " + what);
}

std::string ErrnoText() { return std::strerror(errno); }

// Closes a descriptor on every path out of a function.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

std::shared_ptr<MappedFile> MapFile(const std::filesystem::path& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) Fail(path, "cannot open: " + ErrnoText());
  struct stat status {};
  if (::fstat(fd.get(), &status) != 0) Fail(path, "cannot stat: " + ErrnoText());
  if (!S_ISREG(status.st_mode)) Fail(path, "not a regular file");
  auto mapped = std::make_shared<MappedFile>();
  mapped->size = static_cast<uint64_t>(status.st_size);
  if (mapped->size == 0) return mapped;
  // Writable but private: the file is never modified, yet a caller writing into a returned
  // tensor gets its own copy of the page instead of a segmentation fault.
  void* data = ::mmap(nullptr, mapped->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.get(), 0);
  if (data == MAP_FAILED) Fail(path, "cannot map " + std::to_string(mapped->size) + " bytes: " + ErrnoText());
  mapped->data = static_cast<std::byte*>(data);
  return mapped;
}

// A JSON number that is a whole number in [0, INT64_MAX] (the range of a LibTorch size).
std::optional<uint64_t> AsCount(const nlohmann::json& value) {
  if (value.is_number_unsigned()) {
    const auto count = value.get<uint64_t>();
    if (count <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return count;
    return std::nullopt;
  }
  if (value.is_number_integer() && value.get<int64_t>() >= 0) return value.get<int64_t>();
  return std::nullopt;
}

// a * b, or nothing on overflow.
std::optional<uint64_t> Multiply(uint64_t a, uint64_t b) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return std::nullopt;
  return a * b;
}

// Reads the header as JSON, rejecting a tensor name given twice (JSON parsers keep one of them
// silently, which would hide a tensor of the file).
nlohmann::json ParseHeaderJson(const std::filesystem::path& path, const char* begin, const char* end) {
  std::set<std::string> seen;
  const nlohmann::json::parser_callback_t reject_duplicates =
      [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        // A header is an object of objects: deeper nesting is corrupt or hostile.
        if ((event == nlohmann::json::parse_event_t::object_start ||
             event == nlohmann::json::parse_event_t::array_start) && depth >= 8) {
          Fail(path, "header nests deeper than 8 levels");
        }
        if (depth == 1 && event == nlohmann::json::parse_event_t::key && !seen.insert(parsed.get<std::string>()).second) {
          Fail(path, "header names tensor " + Quoted(parsed.get<std::string>()) + " twice");
        }
        return true;
      };
  try {
    return nlohmann::json::parse(begin, end, reject_duplicates);
  } catch (const nlohmann::json::exception& e) {
    Fail(path, "header is not valid JSON: " + data::JsonErrorWithoutText(e));
  }
}

std::map<std::string, std::string> ParseMetadata(const std::filesystem::path& path, const nlohmann::json& entry) {
  if (!entry.is_object()) Fail(path, "header '__metadata__' must be an object of strings, got " + std::string(entry.type_name()));
  std::map<std::string, std::string> metadata;
  for (const auto& [key, value] : entry.items()) {
    if (!value.is_string()) {
      Fail(path, "header '__metadata__' entry " + Quoted(key) + " must be a string, got " + value.type_name());
    }
    metadata[key] = value.get<std::string>();
  }
  return metadata;
}

// One tensor entry; offsets are checked against the data section of `data_size` bytes that
// starts at `data_start`, and turned into offsets in the file.
SafetensorsTensorInfo ParseEntry(const std::filesystem::path& path, const std::string& name,
                                 const nlohmann::json& entry, uint64_t data_start, uint64_t data_size) {
  const std::string where = "tensor " + Quoted(name) + ": ";
  if (!entry.is_object()) Fail(path, where + "entry must be an object, got " + entry.type_name());
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field)) Fail(path, where + "entry has no '" + field + "'");
  }

  const auto& dtype = entry["dtype"];
  if (!dtype.is_string()) Fail(path, where + "'dtype' must be a string, got " + dtype.type_name());
  const DtypeSpec* spec = FindDtype(dtype.get<std::string>());
  if (spec == nullptr) {
    Fail(path, where + "unknown dtype " + Quoted(dtype.get<std::string>()) + "; the format defines " +
                   DtypeNames(false));
  }

  SafetensorsTensorInfo info;
  info.dtype = std::string(spec->name);
  const auto& shape = entry["shape"];
  if (!shape.is_array()) Fail(path, where + "'shape' must be an array, got " + shape.type_name());
  uint64_t numel = 1;
  for (const auto& dim : shape) {
    const auto size = AsCount(dim);
    if (!size) Fail(path, where + "'shape' holds " + Excerpt(dim) + ", not a size");
    const auto product = Multiply(numel, *size);
    if (!product) Fail(path, where + "'shape' " + Excerpt(shape) + " has more elements than 2^64");
    numel = *product;
    info.shape.push_back(static_cast<int64_t>(*size));
  }

  const auto& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    Fail(path, where + "'data_offsets' must be an array [begin, end], got " + Excerpt(offsets));
  }
  const auto begin = AsCount(offsets[0]);
  const auto end = AsCount(offsets[1]);
  if (!begin || !end) Fail(path, where + "'data_offsets' " + Excerpt(offsets) + " are not byte offsets");
  if (*begin > *end) Fail(path, where + "'data_offsets' " + Excerpt(offsets) + " are reversed");
  if (*end > data_size) {
    Fail(path, where + "'data_offsets' " + Excerpt(offsets) + " reach outside the data section of " +
                   std::to_string(data_size) + " bytes (truncated file?)");
  }
  const auto expected = Multiply(numel, spec->bytes);
  if (!expected || *expected != *end - *begin) {
    Fail(path, where + "holds " + std::to_string(*end - *begin) + " bytes, but shape " + Excerpt(shape) + " of " +
                   info.dtype + " needs " + (expected ? std::to_string(*expected) : "more than 2^64"));
  }
  info.begin = data_start + *begin;
  info.end = data_start + *end;
  return info;
}

void RejectOverlaps(const std::filesystem::path& path, const std::map<std::string, SafetensorsTensorInfo>& tensors) {
  std::vector<std::pair<const std::string*, const SafetensorsTensorInfo*>> ranges;
  for (const auto& [name, info] : tensors) {
    if (info.begin != info.end) ranges.emplace_back(&name, &info);
  }
  std::sort(ranges.begin(), ranges.end(), [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].second->begin < ranges[i - 1].second->end) {
      Fail(path, "tensors " + Quoted(*ranges[i - 1].first) + " and " + Quoted(*ranges[i].first) + " overlap");
    }
  }
}

}  // namespace

SafetensorsReader::SafetensorsReader(const std::filesystem::path& path) : path_(path), mapping_(MapFile(path)) {
  const uint64_t size = mapping_->size;
  if (size < 8) Fail(path_, "file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, mapping_->data, 8);
  if (header_bytes > kMaxHeaderBytes || header_bytes > size - 8) {
    Fail(path_, "header length " + std::to_string(header_bytes) + " is impossible for a file of " +
                    std::to_string(size) + " bytes (limit " + std::to_string(kMaxHeaderBytes) + "); not a safetensors file?");
  }
  const char* header_begin = reinterpret_cast<const char*>(mapping_->data) + 8;
  const auto header = ParseHeaderJson(path_, header_begin, header_begin + header_bytes);
  if (!header.is_object()) Fail(path_, "header must be a JSON object, got " + std::string(header.type_name()));

  const uint64_t data_start = 8 + header_bytes;
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      metadata_ = ParseMetadata(path_, entry);
    } else {
      tensors_.emplace(name, ParseEntry(path_, name, entry, data_start, size - data_start));
    }
  }
  RejectOverlaps(path_, tensors_);
}

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& item : tensors_) names.push_back(item.first);
  return names;
}

const SafetensorsTensorInfo& SafetensorsReader::Info(const std::string& name) const {
  const auto found = tensors_.find(name);
  if (found == tensors_.end()) Fail(path_, "no tensor named " + Quoted(name));
  return found->second;
}

torch::Tensor SafetensorsReader::Tensor(const std::string& name) const {
  const auto& info = Info(name);
  const DtypeSpec& spec = *FindDtype(info.dtype);
  if (!spec.torch_dtype) {
    Fail(path_, "tensor " + Quoted(name) + " has dtype " + info.dtype + ", which LibTorch cannot hold; readable: " +
                    DtypeNames(true));
  }
  if (info.begin == info.end) return torch::empty(info.shape, *spec.torch_dtype);
  std::byte* data = mapping_->data + info.begin;
  if (spec.torch_dtype == torch::kBool) {
    // A byte other than 0 or 1 is not a valid bool to LibTorch's kernels; normalise on a copy.
    return torch::from_blob(data, info.shape, torch::kUInt8).ne(0);
  }
  const auto options = torch::TensorOptions().dtype(*spec.torch_dtype);
  if (reinterpret_cast<uintptr_t>(data) % spec.bytes != 0) {
    // The format does not align tensors; vectorised kernels may assume natural alignment.
    return torch::from_blob(data, info.shape, options).clone();
  }
  return torch::from_blob(data, info.shape, [mapping = mapping_](void*) {}, options);
}

void WriteSafetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<const NamedTensors::value_type*> ordered;
  for (const auto& item : tensors) ordered.push_back(&item);
  std::sort(ordered.begin(), ordered.end(), [](const auto* a, const auto* b) { return a->first < b->first; });

  // Ordered as the reference writer orders it (metadata, then tensors in data order, fields
  // dtype, shape, data_offsets), so that a file of one dtype comes out byte-identical.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  std::vector<torch::Tensor> contents;
  uint64_t offset = 0;
  for (size_t i = 0; i < ordered.size(); ++i) {
    const auto& [name, tensor] = *ordered[i];
    if (name == kMetadataKey) Fail(path, "'__metadata__' is reserved and cannot name a tensor");
    if (i > 0 && ordered[i - 1]->first == name) Fail(path, "tensor " + Quoted(name) + " given twice");
    if (!tensor.defined()) Fail(path, "tensor " + Quoted(name) + " is undefined");
    const DtypeSpec* spec = FindDtype(tensor.scalar_type());
    if (spec == nullptr) {
      Fail(path, "tensor " + Quoted(name) + " has dtype " + std::string(c10::toString(tensor.scalar_type())) +
                     ", which safetensors cannot store; storable: " + DtypeNames(true));
    }
    auto host = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(host.numel()) * spec->bytes;
    header[name] = {{"dtype", std::string(spec->name)}, {"shape", host.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contents.push_back(std::move(host));
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    Fail(path, std::string("cannot encode the header (tensor names and metadata must be UTF-8): ") + e.what());
  }
  // Padding with spaces to a multiple of 8, as the reference writer does, starts the data
  // section 8-byte aligned.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  const uint64_t header_bytes = header_text.size();

  // Temp, fsync, rename, fsync folder: a crash leaves the old file or the new one. An exception
  // on the way removes the temporary (AtomicFile's destructor).
  try {
    data::AtomicFile file(path);
    file.Open();
    file.Write(&header_bytes, sizeof header_bytes);
    file.Write(header_text.data(), header_bytes);
    for (const auto& host : contents) {
      file.Write(host.data_ptr(), static_cast<uint64_t>(host.numel()) * host.element_size());
    }
    file.Commit();
  } catch (const data::FileWriteError& error) {
    throw SafetensorsError(error.what());
  }
}

std::string SafetensorsDigest(const std::filesystem::path& path) {
  const auto mapping = MapFile(path);
  if (mapping->size > 0) ::madvise(mapping->data, mapping->size, MADV_SEQUENTIAL);
  uint64_t hash = 0xcbf29ce484222325ULL;  // FNV-1a 64 offset basis and prime
  for (uint64_t i = 0; i < mapping->size; ++i) {
    hash ^= static_cast<unsigned char>(mapping->data[i]);
    hash *= 0x100000001b3ULL;
  }
  std::ostringstream hex;
  hex << std::hex;
  hex.width(16);
  hex.fill('0');
  hex << hash;
  return hex.str();
}

}  // namespace iisan::models
