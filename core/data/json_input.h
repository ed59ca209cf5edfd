// The one way this program parses JSON that comes from outside it (configs, a backbone's
// config.json, safetensors headers, shard indexes, chunk manifests, HDF5 attributes, run
// directories' files, the cache service's protocol): the text is bounded in size before it is
// read and in nesting depth while it is parsed, so that no input can exhaust the stack or the
// memory; a failure is an InputError that names the source and what to do.
#pragma once

#include <cstddef>
#include <exception>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/data/input_error.h"

namespace iisan::data {

struct JsonLimits {
  size_t max_bytes = size_t{64} << 20;  // the text
  int max_depth = 64;                   // nested objects and arrays
  bool allow_comments = false;          // // and /* */ (config files)
};

// A parser callback that refuses (InputError naming `source`) objects and arrays nested more
// than `max_depth` deep, for readers that call Json::parse themselves.
template <typename Json>
typename Json::parser_callback_t DepthLimit(const std::string& source, int max_depth) {
  return [source, max_depth](int depth, typename Json::parse_event_t event, Json&) {
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= max_depth) {
      throw InputError(source, 0, "JSON nested more than " + std::to_string(max_depth) +
                                      " levels deep; no input of iisan nests like that (a corrupt or hostile file?)");
    }
    return true;
  };
}

// A JSON library error as a message that never echoes the text being parsed: the parser's own
// message quotes the offending token ("last read: '...'", a number's digits), which for a
// hostile file or a file read by the cache service on a client's behalf can be anything.
// What is left says where (line, column) and what was expected.
std::string JsonErrorWithoutText(const std::exception& error);

// A JSON value as an error message may show it: numbers, booleans, null and short printable
// strings as they are; longer strings, arrays and objects by their type and size only.
std::string DescribeJsonValue(const nlohmann::json& value);

// Parses `text` as Json (nlohmann::json or nlohmann::ordered_json). `source` names the input in
// errors ("runs/a/config.json", "the cache service's reply"); errors never quote the text.
template <typename Json>
Json ParseJsonInput(std::string_view text, const std::string& source, const JsonLimits& limits = {}) {
  if (text.size() > limits.max_bytes) {
    throw InputError(source, 0, "JSON of " + std::to_string(text.size()) + " bytes, more than the " +
                                    std::to_string(limits.max_bytes) + " this reader accepts; is it the right file?");
  }
  try {
    return Json::parse(text.begin(), text.end(), DepthLimit<Json>(source, limits.max_depth),
                       /*allow_exceptions=*/true, limits.allow_comments);
  } catch (const typename Json::exception& error) {
    // parse_error says where and what was expected; out_of_range is a number too large (1e999).
    throw InputError(source, 0, "not valid JSON: " + JsonErrorWithoutText(error));
  }
}

// The whole file, its size checked before it is read (InputError naming it otherwise).
std::string ReadBoundedFile(const std::filesystem::path& path, size_t max_bytes);

// Reads and parses a file, bounded as above.
template <typename Json>
Json ReadJsonFile(const std::filesystem::path& path, const JsonLimits& limits = {}) {
  return ParseJsonInput<Json>(ReadBoundedFile(path, limits.max_bytes), path.string(), limits);
}

}  // namespace iisan::data
