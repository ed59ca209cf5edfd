// The sweep's wire: one JSON object per line each way, one request per connection, over a Unix
// socket (mode 0600) or TCP. The server bounds every request (size, read time, open
// connections) and keeps serving whatever a peer sends; the client bounds every wait.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace iisan::launcher::sweep {

struct LineServerOptions {
  std::string unix_path;  // used when listen is empty
  std::string listen;     // "HOST:PORT" (port 0: any free port)
  size_t max_request_bytes = 1 << 20;
  std::chrono::milliseconds read_timeout{10000};
  int max_connections = 256;
};

// Handles one request line (already parsed as JSON, or a parse error message) and returns the
// reply object. Runs on the server's one I/O thread.
using LineHandler = std::function<nlohmann::ordered_json(const nlohmann::ordered_json* request,
                                                         const std::string& parse_error)>;

class LineServer {
 public:
  // Binds; std::runtime_error naming the address when it cannot (another live server on the
  // Unix socket included; a stale socket file is replaced).
  LineServer(LineServerOptions options, LineHandler handler);
  ~LineServer();
  LineServer(const LineServer&) = delete;
  LineServer& operator=(const LineServer&) = delete;
  // "unix:PATH" or "HOST:PORT" with the bound port.
  std::string endpoint() const;
  void Run();   // serves until Stop()
  void Stop();  // thread-safe

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One request, one reply. std::runtime_error naming the endpoint on a connection failure, a
// timeout or a reply that is not a JSON object.
nlohmann::ordered_json CallLine(const std::string& endpoint, const nlohmann::ordered_json& request,
                                std::chrono::milliseconds timeout);

}  // namespace iisan::launcher::sweep
