// InputError: the one exception type for bad user-supplied files (datasets, vocabularies, images,
// configs). Its message names the file, the line when there is one, the problem and the fix.
#pragma once

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace iisan::data {

class InputError : public std::runtime_error {
 public:
  // line is 1-based; 0 means the problem concerns the file as a whole.
  InputError(const std::filesystem::path& path, int64_t line, const std::string& message);

  const std::filesystem::path& path() const { return path_; }
  int64_t line() const { return line_; }

 private:
  std::filesystem::path path_;
  int64_t line_;
};

}  // namespace iisan::data
