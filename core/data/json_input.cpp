// Bounded reads of JSON files.
#include "core/data/json_input.h"

#include <cerrno>
#include <cstring>
#include <fstream>

namespace iisan::data {

std::string ReadBoundedFile(const std::filesystem::path& path, size_t max_bytes) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    throw InputError(path, 0, std::filesystem::exists(path, error) ? "not a regular file; point to a file, not a folder" : "file not found; check the path");
  }
  const auto size = std::filesystem::file_size(path, error);
  if (error) throw InputError(path, 0, "cannot read its size: " + error.message());
  if (size > max_bytes) {
    throw InputError(path, 0, std::to_string(size) + " bytes, more than the " + std::to_string(max_bytes) +
                                  " this reader accepts; is it the right file?");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path, 0, std::string("cannot open: ") + std::strerror(errno));
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  if (static_cast<size_t>(in.gcount()) != size) throw InputError(path, 0, "could not read the whole file");
  return text;
}

}  // namespace iisan::data
