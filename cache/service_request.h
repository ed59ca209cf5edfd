// The cache service's wire protocol: one JSON object per line in each direction.
//   {"op":"ensure","config":{...}}   build the cache of this config (a config overlay, as a
//                                    config file holds) unless it exists; reply when ready:
//                                    {"ok":true,"key":K,"path":P,"built":bool}, plus
//                                    "joined":true for requests that joined a running build
//   {"op":"ensure","key":K}          the cache of a key the service already has (or is building)
//   {"op":"status"}                  builds in progress with their progress, and counters
//   {"op":"list"}                    the caches in the service's folder
//   {"op":"evict","key":K}           delete a cache (refused while it is being built)
// Every request may carry "token" (required when the service has one). Errors are
// {"ok":false,"error":"..."}; a service at its connection cap answers with "busy":true added and
// closes. While a request waits for a build, the service sends {"waiting":true} lines before
// the reply, so that clients can time out a stuck service without timing out a long build.
// A config's cache.path and cache.dir, when given, must lie inside the service's cache folder;
// the service keeps every cache at <its cache.dir>/<key>.h5. ParseServiceRequest never throws:
// any bytes give either a request or an error message.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace iisan::cache {

inline constexpr size_t kDefaultMaxRequestBytes = 64 * 1024;

enum class ServiceOp { kEnsure, kStatus, kList, kEvict };

struct ServiceRequest {
  ServiceOp op = ServiceOp::kStatus;
  nlohmann::json config;  // ensure by config: an object
  std::string key;        // ensure by key, evict
  std::string token;
};

struct ParsedRequest {
  std::optional<ServiceRequest> request;
  std::string error;  // set when request is empty
};

ParsedRequest ParseServiceRequest(std::string_view line);

nlohmann::json ServiceErrorReply(const std::string& message);

}  // namespace iisan::cache
