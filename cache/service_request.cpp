#include "cache/service_request.h"

#include <set>

#include "cache/digest.h"
#include "core/data/json_input.h"

namespace iisan::cache {
namespace {

const char* kUsage = "expected one JSON object per line with \"op\": ensure, status, list or evict";

std::string Preview(std::string_view text) {
  std::string out(text.substr(0, 40));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return out + (text.size() > 40 ? "..." : "");
}

}  // namespace

nlohmann::json ServiceErrorReply(const std::string& message) { return {{"ok", false}, {"error", message}}; }

ParsedRequest ParseServiceRequest(std::string_view line) {
  ParsedRequest out;
  auto fail = [&](std::string message) {
    out.error = std::move(message);
    return out;
  };
  // Depth-limited: nlohmann's parser recurses, and a line of 64 KiB of '[' must not be a crash.
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : line) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') max_depth = std::max(max_depth, ++depth);
    else if (c == '}' || c == ']') --depth;
  }
  if (max_depth > 64) return fail("request nests deeper than 64 levels");

  nlohmann::json json;
  try {
    json = data::ParseJsonInput<nlohmann::json>(line, "request", {line.size(), 64});
  } catch (const data::InputError&) {
    return fail("malformed JSON (" + Preview(line) + "); " + kUsage);
  }
  if (!json.is_object()) return fail(std::string("the request is a JSON ") + json.type_name() + "; " + kUsage);
  static const std::set<std::string> known = {"op", "config", "key", "token"};
  for (const auto& [name, value] : json.items()) {
    if (!known.count(name)) return fail("unknown field '" + Preview(name) + "'; fields are op, config, key, token");
  }
  if (!json.contains("op") || !json["op"].is_string()) return fail("field 'op' is missing or not a string; " + std::string(kUsage));
  ServiceRequest request;
  const auto op = json["op"].get<std::string>();
  if (op == "ensure") request.op = ServiceOp::kEnsure;
  else if (op == "status") request.op = ServiceOp::kStatus;
  else if (op == "list") request.op = ServiceOp::kList;
  else if (op == "evict") request.op = ServiceOp::kEvict;
  else return fail("unknown op '" + Preview(op) + "'; ops are ensure, status, list, evict");

  if (json.contains("token")) {
    if (!json["token"].is_string()) return fail("field 'token' must be a string");
    request.token = json["token"].get<std::string>();
  }
  if (json.contains("key")) {
    if (!json["key"].is_string() || !IsCacheKey(json["key"].get<std::string>())) {
      return fail("field 'key' must be a cache key: 16 lower-case hex digits");
    }
    request.key = json["key"].get<std::string>();
  }
  if (json.contains("config")) {
    if (!json["config"].is_object()) return fail("field 'config' must be a JSON object (a config overlay)");
    request.config = json["config"];
  }
  const bool has_key = json.contains("key"), has_config = json.contains("config");
  switch (request.op) {
    case ServiceOp::kEnsure:
      if (has_key == has_config) return fail("ensure needs exactly one of 'config' (an object) or 'key'");
      break;
    case ServiceOp::kEvict:
      if (!has_key || has_config) return fail("evict needs 'key' (and no 'config')");
      break;
    case ServiceOp::kStatus:
    case ServiceOp::kList:
      if (has_key || has_config) return fail(op + " takes no 'key' or 'config'");
      break;
  }
  out.request = std::move(request);
  return out;
}

}  // namespace iisan::cache
