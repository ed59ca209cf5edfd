// Bounded reads of JSON files.
#include "core/data/json_input.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

namespace iisan::data {

std::string JsonErrorWithoutText(const std::exception& error) {
  std::string message = error.what();
  // "[json.exception.parse_error.101] parse error at line 1, column 7: syntax error while parsing
  // value - invalid literal; last read: 'TEXT'; expected ...": everything before "; last read"
  // is the library's own wording; the token it quotes comes from the input.
  if (message.rfind("[json.exception.", 0) == 0) {
    const auto end = message.find("] ");
    if (end != std::string::npos) message.erase(0, end + 2);
  }
  if (const auto quoted = message.find("; last read: "); quoted != std::string::npos) {
    message.erase(quoted);
  } else if (message.find("number overflow") != std::string::npos) {
    message = "a number too large for a double";
  } else if (message.find("parse error") != 0) {
    // Other library errors may quote input too; keep only the wording before any quote.
    message.erase(std::min(message.find('\''), message.size()));
  }
  return message;
}

std::string DescribeJsonValue(const nlohmann::json& value) {
  constexpr size_t kMaxShownString = 32;
  const auto count = [](size_t n, const char* noun) {
    return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
  };
  if (value.is_string()) {
    const auto& text = value.get_ref<const std::string&>();
    const bool printable = std::all_of(text.begin(), text.end(), [](char c) {
      return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f;
    });
    if (printable && text.size() <= kMaxShownString) return value.dump();
    return "a string of " + count(text.size(), "byte");
  }
  if (value.is_array()) return "an array of " + count(value.size(), "value");
  if (value.is_object()) return "an object of " + count(value.size(), "key");
  return value.dump();  // a number, a boolean or null: a few characters
}

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
