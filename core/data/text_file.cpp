// Implementation of the shared file and line readers.
#include "core/data/text_file.h"

#include <ftw.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <system_error>

#include "core/data/input_error.h"

namespace iisan::data {

void RemoveTree(const std::filesystem::path& path) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) {
    if (errno == ENOENT) return;
    throw std::filesystem::filesystem_error("cannot remove", path, std::error_code(errno, std::generic_category()));
  }
  // Children before their folder (FTW_DEPTH), links not followed (FTW_PHYS).
  static thread_local std::string failed;
  failed.clear();
  const int result = ::nftw(
      path.c_str(),
      [](const char* entry, const struct stat*, int, struct FTW*) -> int {
        if (::remove(entry) == 0) return 0;
        failed = entry;
        return errno != 0 ? errno : EIO;
      },
      16, FTW_DEPTH | FTW_PHYS);
  if (result != 0) {
    const int code = result > 0 ? result : errno;
    throw std::filesystem::filesystem_error("cannot remove", failed.empty() ? path : std::filesystem::path(failed),
                                            std::error_code(code, std::generic_category()));
  }
}
namespace {

constexpr std::string_view kByteOrderMark = "\xEF\xBB\xBF";

std::string Hex(unsigned char byte) {
  constexpr char kDigits[] = "0123456789ABCDEF";
  return std::string("0x") + kDigits[byte >> 4] + kDigits[byte & 15];
}

}  // namespace

std::string ReadFile(const std::filesystem::path& path) {
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  if (!std::filesystem::exists(status)) {
    throw InputError(path, 0, "file not found; check the path");
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw InputError(path, 0, "not a regular file; point to a file, not a folder");
  }
  const auto size = std::filesystem::file_size(path, error);
  std::string bytes(error ? 0 : size, '\0');
  std::ifstream in(path, std::ios::binary);
  if (error || !in || !in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) {
    throw InputError(path, 0, "cannot be read; check its permissions");
  }
  return bytes;
}

size_t FindInvalidUtf8(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const size_t size = text.size();
  size_t i = 0;
  while (i < size) {
    const unsigned char lead = bytes[i];
    if (lead < 0x80) {
      ++i;
      continue;
    }
    int length;
    char32_t min_value;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2, min_value = 0x80;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3, min_value = 0x800;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4, min_value = 0x10000;
    } else {
      return i;
    }
    if (i + length > size) return i;
    char32_t value = lead & (0x7F >> length);
    for (int k = 1; k < length; ++k) {
      if ((bytes[i + k] & 0xC0) != 0x80) return i;
      value = (value << 6) | (bytes[i + k] & 0x3F);
    }
    if (value < min_value || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return i;
    i += length;
  }
  return std::string_view::npos;
}

TextLines::TextLines(std::filesystem::path path, std::string_view text)
    : path_(std::move(path)), rest_(text) {
  if (rest_.starts_with(kByteOrderMark)) rest_.remove_prefix(kByteOrderMark.size());
}

bool TextLines::Next(std::string_view* line) {
  if (rest_.empty()) return false;
  const size_t end = rest_.find('\n');
  *line = rest_.substr(0, end);
  rest_ = end == std::string_view::npos ? std::string_view() : rest_.substr(end + 1);
  if (line->ends_with('\r')) line->remove_suffix(1);
  ++line_number_;
  if (const size_t bad = FindInvalidUtf8(*line); bad != std::string_view::npos) {
    throw InputError(path_, line_number_,
                     "invalid UTF-8 at byte offset " + std::to_string(bad) + " of the line (byte " +
                         Hex(static_cast<unsigned char>((*line)[bad])) +
                         "); re-save the file as UTF-8");
  }
  return true;
}

}  // namespace iisan::data
