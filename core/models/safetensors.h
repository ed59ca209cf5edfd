// Reading and writing the safetensors format (github.com/huggingface/safetensors): an 8-byte
// little-endian header length, a JSON header naming each tensor's dtype, shape and byte range,
// then the raw little-endian data. Hugging Face backbones and our own checkpoints use it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace iisan::models {

// Every problem with a safetensors file, its header or its contents; the message names the file.
class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Tensors by name, in a chosen order: what a state dict is in files.
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct SafetensorsTensorInfo {
  std::string dtype;           // the format's name: "F32", "BF16", "I64", …
  std::vector<int64_t> shape;  // empty for a 0-d tensor
  uint64_t begin = 0;          // byte range [begin, end) in the file (not in the data section)
  uint64_t end = 0;
};

struct MappedFile;

// A validated, memory-mapped safetensors file. The mapping is private copy-on-write: tensors
// returned by Tensor() view it without copying, stay valid after the reader is destroyed (each
// holds the mapping alive), and may be written to without touching the file. The file must not
// be truncated in place while mapped (as with any mapped file, reading a page past its new end
// is a SIGBUS); WriteSafetensors never does, it renames a new file over the old one.
class SafetensorsReader {
 public:
  // Maps and validates the whole header; throws SafetensorsError on anything malformed.
  explicit SafetensorsReader(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const SafetensorsTensorInfo& Info(const std::string& name) const;
  // The "__metadata__" entry (string to string), empty when the file has none.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A CPU tensor of the stored dtype. Throws for dtypes LibTorch cannot hold (U16, F8_*, …).
  torch::Tensor Tensor(const std::string& name) const;

 private:
  std::filesystem::path path_;
  std::shared_ptr<MappedFile> mapping_;
  std::map<std::string, SafetensorsTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (any device; names unique, not "__metadata__") in name order, under a
// temporary name that is renamed into place once complete and synced, so that `path` holds
// either the old file or the whole new one. Dtypes: bool, uint8, int8/16/32/64, float16,
// bfloat16, float32, float64.
void WriteSafetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// 64-bit FNV-1a of the file's bytes, as 16 hex digits: a fingerprint of a weights file.
std::string SafetensorsDigest(const std::filesystem::path& path);

}  // namespace iisan::models
