// Formats InputError messages as "path:line: message", the shape compilers use, so editors and
// terminals can jump straight to the offending line.
#include "core/data/input_error.h"

namespace iisan::data {
namespace {

std::string Format(const std::filesystem::path& path, int64_t line, const std::string& message) {
  std::string out = path.string();
  if (line > 0) out += ":" + std::to_string(line);
  return out + ": " + message;
}

}  // namespace

InputError::InputError(const std::filesystem::path& path, int64_t line, const std::string& message)
    : std::runtime_error(Format(path, line, message)), path_(path), line_(line) {}

}  // namespace iisan::data
