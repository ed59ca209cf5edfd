// Whole-file reads and UTF-8-checked line splitting shared by the readers of this library
// (TSV files, vocabularies, image files, JSON configs), and RemoveTree, which the other
// libraries use too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace iisan::data {

// The file's bytes; InputError if it is missing, not a regular file or unreadable.
std::string ReadFile(const std::filesystem::path& path);

// Removes `path` and, for a folder, everything below it (symbolic links are removed, not
// followed); a path that does not exist is no error. Throws std::filesystem::filesystem_error
// naming the entry that could not be removed. Our own walk (nftw): libstdc++ 13's
// std::filesystem::remove_all crashed (a call through a null pointer) on Ubuntu 24.04 with a
// LibTorch 2.11 build, removing a folder of plain files.
void RemoveTree(const std::filesystem::path& path);

// Offset of the first byte that makes text invalid UTF-8 (overlong forms, surrogates and code
// points past U+10FFFF count as invalid), or std::string_view::npos when it is valid.
size_t FindInvalidUtf8(std::string_view text);

// Walks the lines of a file's text, numbered from 1. A trailing '\r' and a leading UTF-8 byte
// order mark are removed; a line that is not valid UTF-8 raises InputError with its byte offset.
class TextLines {
 public:
  TextLines(std::filesystem::path path, std::string_view text);

  // Stores the next line in *line and returns true, or returns false at the end of the text.
  bool Next(std::string_view* line);
  int64_t line_number() const { return line_number_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::string_view rest_;
  int64_t line_number_ = 0;
};

}  // namespace iisan::data
