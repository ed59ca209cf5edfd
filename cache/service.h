// `iisan cache serve`: a Boost.Asio daemon through which jobs and sweep trials share cache
// builds. Clients ask it to ensure a key spec and get the path when the cache is ready;
// concurrent requests for the same key join one build (single flight). It listens on a Unix
// socket (mode 0600), or on TCP 127.0.0.1; any other address needs a shared-secret token. Requests
// are one line of JSON (service_request.h) of at most max_request_bytes: a longer one gets an
// error reply and the connection is closed; a malformed one gets an error reply; the service
// keeps serving either way. A connection that sends no whole request (or takes no reply) within
// idle_timeout is closed, and connections beyond max_connections are refused with an error
// reply; both are logged. Only caches inside cache_dir are served, evicted or built. Builds run
// on worker threads, never on the I/O thread.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "cache/builder.h"
#include "cache/service_request.h"

namespace iisan::cache {

// What an ensure request resolves to: the key, where its cache lives, and how to make sure it
// is there (returns whether it ran a build).
struct ServiceTarget {
  std::string key;
  std::filesystem::path path;
  std::function<bool(const BuildControl&)> ensure;
};
// Turns a request's config overlay into a target (throws with a message for the client).
using SpecResolver = std::function<ServiceTarget(const nlohmann::json& config)>;

inline constexpr std::chrono::milliseconds kDefaultIdleTimeout{30'000};
inline constexpr int kDefaultMaxConnections = 256;
// Clients wait longer than this between two lines (ServiceCallOptions::reply_timeout).
inline constexpr std::chrono::milliseconds kDefaultHeartbeat{5'000};

struct ServiceOptions {
  std::filesystem::path socket_path;  // Unix socket; used when `listen` is empty
  std::string listen;                 // "HOST:PORT" for TCP (port 0: any free port)
  std::string token;                  // required in every request when set
  std::filesystem::path cache_dir;    // the caches that list, evict and ensure see
  size_t max_request_bytes = kDefaultMaxRequestBytes;
  int workers = 4;                    // threads that resolve requests and run builds
  // How long a connection may take to send a whole request, or to take a reply; the time a
  // request spends being served (a build) does not count.
  std::chrono::milliseconds idle_timeout = kDefaultIdleTimeout;
  int max_connections = kDefaultMaxConnections;  // open at once; more are refused
  // While a request waits for its build, a {"waiting":true} line this often.
  std::chrono::milliseconds heartbeat = kDefaultHeartbeat;
  bool stop_on_signals = false;       // SIGINT / SIGTERM stop Run()
};

class CacheService {
 public:
  // Binds the socket. CacheError for a non-loopback address without a token, an address that
  // does not parse, or a socket that another live service already serves.
  CacheService(ServiceOptions options, SpecResolver resolver);
  ~CacheService();
  CacheService(const CacheService&) = delete;
  CacheService& operator=(const CacheService&) = delete;

  // "unix:PATH" or "HOST:PORT" (with the bound port), as clients pass it to CallCacheService.
  std::string endpoint() const;
  // Serves until Stop() (or a signal, with stop_on_signals).
  void Run();
  // Thread-safe; builds already running finish before the destructor returns.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

inline constexpr std::chrono::milliseconds kDefaultServiceTimeout{60'000};

struct ServiceCallOptions {
  // To connect, and to be let in by a service at its connection cap (retried until then).
  std::chrono::milliseconds connect_timeout = kDefaultServiceTimeout;
  // The longest silence while waiting for the reply. The service sends a line every heartbeat
  // while a build runs, so this bounds a stuck service, not a long build.
  std::chrono::milliseconds reply_timeout = kDefaultServiceTimeout;
};

// Whether `given` is the `expected` token, in time that depends on neither the bytes given nor how
// many of them match (the loop always runs over the expected token). Shared by every listener
// that takes a token (the cache service, the sweep scheduler).
bool SameToken(const std::string& given, const std::string& expected);

// "HOST:PORT" (IPv6 in brackets, "localhost" as 127.0.0.1) split and checked; CacheError naming
// the text otherwise.
std::pair<std::string, unsigned short> SplitHostPort(const std::string& spec);

// One request, one reply, over a fresh connection. `endpoint`: "unix:PATH", a path containing
// '/', or "HOST:PORT". CacheError naming the endpoint if it cannot connect, a timeout passes or
// the reply is not JSON. The reply is returned as is (check "ok").
nlohmann::json CallCacheService(const std::string& endpoint, const nlohmann::json& request,
                                const ServiceCallOptions& options = {});

}  // namespace iisan::cache
