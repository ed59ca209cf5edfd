// The service: an io_context on the calling thread accepts connections and reads request
// lines; ensure requests go to a worker pool, whose threads resolve the spec, join or start the
// key's flight and, for the first request of a key, run the build. Replies travel back to the
// connection's executor. One request is handled at a time per connection.
#include "cache/service.h"

#include <sys/stat.h>
#include <sys/un.h>

#include <atomic>
#include <map>
#include <optional>
#include <array>
#include <mutex>

#include <boost/asio.hpp>
#include <glog/logging.h>

#include "cache/cache_dir.h"
#include "cache/digest.h"
#include "cache/state_file.h"
#include "core/data/json_input.h"

namespace iisan::cache {
namespace asio = boost::asio;
using LocalSocket = asio::local::stream_protocol::socket;
using TcpSocket = asio::ip::tcp::socket;
using Reply = std::function<void(nlohmann::json)>;

namespace {

// Bytes of an oversized request that are read and dropped after the error reply, so that the
// client sees the reply rather than a reset; past this the connection is simply closed.
constexpr size_t kMaxDrainBytes = 64ULL << 20;

bool SameToken(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::pair<std::string, unsigned short> SplitHostPort(const std::string& spec) {
  const auto colon = spec.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == spec.size()) {
    throw CacheError("'" + spec + "': expected HOST:PORT, e.g. 127.0.0.1:7070");
  }
  const std::string port_text = spec.substr(colon + 1);
  if (port_text.find_first_not_of("0123456789") != std::string::npos || port_text.size() > 5 ||
      std::stoi(port_text) > 65535) {
    throw CacheError("'" + spec + "': the port must be a number 0..65535");
  }
  std::string host = spec.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost") host = "127.0.0.1";
  return {host, static_cast<unsigned short>(std::stoi(port_text))};
}

std::string DumpLine(const nlohmann::json& reply) {
  return reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace

struct CacheService::Impl {
  struct Flight {
    std::string key;
    std::filesystem::path path;
    std::atomic<int64_t> chunks_done{0};
    std::atomic<int64_t> chunks_total{0};
    std::vector<Reply> waiters;
  };

  ServiceOptions options;
  SpecResolver resolver;
  asio::io_context io;
  std::optional<asio::local::stream_protocol::acceptor> local_acceptor;
  std::optional<asio::ip::tcp::acceptor> tcp_acceptor;
  std::optional<asio::signal_set> signals;
  asio::thread_pool workers;
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<Flight>> flights;
  int64_t flights_started = 0;
  int64_t builds_run = 0;
  int64_t requests_served = 0;
  std::string endpoint;

  Impl(ServiceOptions o, SpecResolver r)
      : options(std::move(o)), resolver(std::move(r)), workers(std::max(1, options.workers)) {}

  template <class Socket>
  struct Session : std::enable_shared_from_this<Session<Socket>> {
    // The Impl outlives every session: sessions live in handlers of its io_context, which are
    // destroyed with it, after the workers that post replies have been joined.
    Session(Impl* impl, Socket socket) : impl(impl), socket(std::move(socket)) {}
    Impl* impl;
    Socket socket;
    std::string buffer;
    std::array<char, 65536> scratch{};
    size_t drained = 0;

    void Read() {
      auto self = this->shared_from_this();
      asio::async_read_until(socket, asio::dynamic_buffer(buffer, impl->options.max_request_bytes), '\n',
                             [self](const boost::system::error_code& error, size_t length) {
                               self->OnLine(error, length);
                             });
    }

    void OnLine(const boost::system::error_code& error, size_t length) {
      if (error == asio::error::not_found) {
        Send(ServiceErrorReply("request exceeds " + std::to_string(impl->options.max_request_bytes) +
                               " bytes (or has no newline); the connection is closed"),
             /*close=*/true);
        return;
      }
      if (error) return;  // closed by the client: the session ends
      std::string line = buffer.substr(0, length - 1);
      buffer.erase(0, length);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) return Read();
      auto self = this->shared_from_this();
      impl->Handle(line, [self](nlohmann::json reply) {
        asio::post(self->socket.get_executor(), [self, reply = std::move(reply)] { self->Send(reply, false); });
      });
    }

    void Send(const nlohmann::json& reply, bool close) {
      auto self = this->shared_from_this();
      auto bytes = std::make_shared<std::string>(DumpLine(reply));
      asio::async_write(socket, asio::buffer(*bytes), [self, bytes, close](const boost::system::error_code& error, size_t) {
        if (error) return;
        if (!close) return self->Read();
        boost::system::error_code ignored;
        self->socket.shutdown(asio::socket_base::shutdown_send, ignored);
        self->Drain();
      });
    }

    // Reads and drops what the client still sends, until it closes (or too much has come).
    void Drain() {
      auto self = this->shared_from_this();
      socket.async_read_some(asio::buffer(scratch), [self](const boost::system::error_code& error, size_t n) {
        self->drained += n;
        if (error || self->drained > kMaxDrainBytes) {
          boost::system::error_code ignored;
          self->socket.close(ignored);
          return;
        }
        self->Drain();
      });
    }
  };

  template <class Acceptor>
  void Accept(Acceptor& acceptor) {
    acceptor.async_accept([this, &acceptor](const boost::system::error_code& error, auto socket) {
      if (error == asio::error::operation_aborted) return;
      if (!error) {
        using Socket = std::decay_t<decltype(socket)>;
        std::make_shared<Session<Socket>>(this, std::move(socket))->Read();
      }
      Accept(acceptor);
    });
  }

  void Handle(const std::string& line, const Reply& reply) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      ++requests_served;
    }
    auto parsed = ParseServiceRequest(line);
    if (!parsed.request) return reply(ServiceErrorReply(parsed.error));
    const auto& request = *parsed.request;
    if (!options.token.empty() && !SameToken(request.token, options.token)) {
      return reply(ServiceErrorReply("missing or wrong token: this service requires its shared-secret token"));
    }
    try {
      switch (request.op) {
        case ServiceOp::kStatus: return reply(Status());
        case ServiceOp::kList: return reply({{"ok", true}, {"caches", ListCaches(options.cache_dir)}});
        case ServiceOp::kEvict: return reply(Evict(request.key));
        case ServiceOp::kEnsure: {
          asio::post(workers, [this, request, reply] { Ensure(request, reply); });
          return;
        }
      }
    } catch (const std::exception& error) {
      reply(ServiceErrorReply(error.what()));
    }
  }

  nlohmann::json Status() {
    std::lock_guard<std::mutex> lock(mutex);
    nlohmann::json builds = nlohmann::json::array();
    for (const auto& [key, flight] : flights) {
      const int64_t done = flight->chunks_done, total = flight->chunks_total;
      builds.push_back({{"key", key}, {"path", flight->path.string()}, {"chunks_done", done}, {"chunks_total", total},
                        {"progress", total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 0.0},
                        {"waiting_requests", flight->waiters.size()}});
    }
    return {{"ok", true}, {"builds", builds}, {"flights_started", flights_started}, {"builds_run", builds_run},
            {"requests_served", requests_served}, {"cache_dir", options.cache_dir.string()}};
  }

  nlohmann::json Evict(const std::string& key) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (flights.count(key)) throw CacheError("key " + key + " is being built; evict it when the build is done");
    }
    nlohmann::json removed = nlohmann::json::array();
    for (const auto& path : RemoveCache(options.cache_dir, key)) removed.push_back(path.string());
    return {{"ok", true}, {"removed", removed}};
  }

  // Joins the key's flight if one is running: true. Otherwise starts one with `reply` as its
  // first waiter when `start` is set.
  std::shared_ptr<Flight> JoinOrStart(const std::string& key, const std::filesystem::path& path, const Reply& reply,
                                      bool start, bool* joined) {
    std::lock_guard<std::mutex> lock(mutex);
    auto found = flights.find(key);
    if (found != flights.end()) {
      found->second->waiters.push_back(reply);
      *joined = true;
      return found->second;
    }
    *joined = false;
    if (!start) return nullptr;
    auto flight = std::make_shared<Flight>();
    flight->key = key;
    flight->path = path;
    flight->waiters.push_back(reply);
    flights[key] = flight;
    ++flights_started;
    return flight;
  }

  void Ensure(const ServiceRequest& request, const Reply& reply) {
    std::shared_ptr<Flight> flight;
    try {
      bool joined = false;
      if (!request.key.empty()) {
        const auto path = options.cache_dir / (request.key + ".h5");
        if (JoinOrStart(request.key, path, reply, false, &joined) || joined) return;
        const auto header = ReadStateFileHeader(path);
        if (header.fingerprint != request.key) {
          throw CacheError(path.string() + ": holds key " + header.fingerprint + ", not " + request.key);
        }
        return reply({{"ok", true}, {"key", request.key}, {"path", std::filesystem::absolute(path).string()},
                      {"built", false}});
      }
      const auto target = resolver(request.config);
      flight = JoinOrStart(target.key, target.path, reply, true, &joined);
      if (joined) return;
      BuildControl control;
      control.on_progress = [flight](int64_t done, int64_t total) {
        flight->chunks_done = done;
        flight->chunks_total = total;
      };
      const bool built = target.ensure(control);
      Finish(flight, {{"ok", true}, {"key", target.key}, {"path", std::filesystem::absolute(target.path).string()},
                      {"built", built}}, built);
    } catch (const std::exception& error) {
      LOG(WARNING) << "cache service: ensure failed: " << error.what();
      if (flight) Finish(flight, ServiceErrorReply(error.what()), false);
      else reply(ServiceErrorReply(error.what()));
    }
  }

  void Finish(const std::shared_ptr<Flight>& flight, const nlohmann::json& result, bool built) {
    std::vector<Reply> waiters;
    {
      std::lock_guard<std::mutex> lock(mutex);
      flights.erase(flight->key);
      builds_run += built;
      waiters.swap(flight->waiters);
    }
    // The first request started the build; the others joined it ("joined": true, "built": false).
    for (size_t i = 0; i < waiters.size(); ++i) {
      auto reply = result;
      if (i > 0 && reply.value("ok", false)) {
        reply["built"] = false;
        reply["joined"] = true;
      }
      waiters[i](reply);
    }
  }
};

CacheService::CacheService(ServiceOptions options, SpecResolver resolver)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(resolver))) {
  auto& impl = *impl_;
  if (!impl.options.listen.empty()) {
    const auto [host, port] = SplitHostPort(impl.options.listen);
    boost::system::error_code error;
    const auto address = asio::ip::make_address(host, error);
    if (error) throw CacheError("--listen " + impl.options.listen + ": '" + host + "' is not an IP address");
    if (!address.is_loopback() && impl.options.token.empty()) {
      throw CacheError("--listen " + impl.options.listen + ": a non-loopback address needs a shared-secret token "
                       "(--token or cache.token) so that only clients that know it are served");
    }
    impl.tcp_acceptor.emplace(impl.io);
    const asio::ip::tcp::endpoint endpoint(address, port);
    impl.tcp_acceptor->open(endpoint.protocol());
    impl.tcp_acceptor->set_option(asio::socket_base::reuse_address(true));
    impl.tcp_acceptor->bind(endpoint, error);
    if (error) throw CacheError("--listen " + impl.options.listen + ": cannot bind: " + error.message());
    impl.tcp_acceptor->listen();
    const auto bound = impl.tcp_acceptor->local_endpoint();
    impl.endpoint = bound.address().to_string() + ":" + std::to_string(bound.port());
  } else {
    const auto& path = impl.options.socket_path;
    if (path.empty()) throw CacheError("the cache service needs a Unix socket path or a --listen address");
    if (path.string().size() >= sizeof(sockaddr_un::sun_path)) {
      throw CacheError(path.string() + ": a Unix socket path must be shorter than " +
                       std::to_string(sizeof(sockaddr_un::sun_path)) + " bytes; choose a shorter --socket");
    }
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
    if (std::filesystem::exists(path)) {
      LocalSocket probe(impl.io);
      boost::system::error_code error;
      probe.connect(asio::local::stream_protocol::endpoint(path.string()), error);
      if (!error) throw CacheError(path.string() + ": another cache service is already serving on this socket");
      std::filesystem::remove(path);  // stale: its service died
    }
    impl.local_acceptor.emplace(impl.io, asio::local::stream_protocol::endpoint(path.string()));
    ::chmod(path.c_str(), 0600);
    impl.endpoint = "unix:" + path.string();
  }
  if (impl.options.stop_on_signals) {
    impl.signals.emplace(impl.io, SIGINT, SIGTERM);
    impl.signals->async_wait([this](const boost::system::error_code& error, int signal) {
      if (!error) {
        LOG(INFO) << "cache service: signal " << signal << ", stopping";
        Stop();
      }
    });
  }
}

CacheService::~CacheService() {
  Stop();
  impl_->workers.join();
  if (impl_->local_acceptor) {
    std::error_code ignored;
    std::filesystem::remove(impl_->options.socket_path, ignored);
  }
}

std::string CacheService::endpoint() const { return impl_->endpoint; }

void CacheService::Run() {
  if (impl_->local_acceptor) impl_->Accept(*impl_->local_acceptor);
  if (impl_->tcp_acceptor) impl_->Accept(*impl_->tcp_acceptor);
  LOG(INFO) << "cache service on " << impl_->endpoint << " (caches in " << impl_->options.cache_dir << ", "
            << impl_->options.workers << " workers, requests up to " << impl_->options.max_request_bytes << " bytes"
            << (impl_->options.token.empty() ? "" : ", token required") << ")";
  impl_->io.run();
}

void CacheService::Stop() { impl_->io.stop(); }

nlohmann::json CallCacheService(const std::string& endpoint, const nlohmann::json& request) {
  asio::io_context io;
  std::string reply;
  boost::system::error_code error;
  auto exchange = [&](auto& socket) {
    asio::write(socket, asio::buffer(DumpLine(request)), error);
    if (!error) asio::read_until(socket, asio::dynamic_buffer(reply, 64 << 20), '\n', error);
  };
  const bool unix_socket = endpoint.rfind("unix:", 0) == 0 || endpoint.find('/') != std::string::npos;
  if (unix_socket) {
    const std::string path = endpoint.rfind("unix:", 0) == 0 ? endpoint.substr(5) : endpoint;
    LocalSocket socket(io);
    socket.connect(asio::local::stream_protocol::endpoint(path), error);
    if (error) {
      throw CacheError("cache service " + endpoint + ": cannot connect (" + error.message() +
                       "); is `iisan cache serve` running there?");
    }
    exchange(socket);
  } else {
    const auto [host, port] = SplitHostPort(endpoint);
    asio::ip::tcp::resolver resolver(io);
    const auto endpoints = resolver.resolve(host, std::to_string(port), error);
    TcpSocket socket(io);
    if (!error) asio::connect(socket, endpoints, error);
    if (error) {
      throw CacheError("cache service " + endpoint + ": cannot connect (" + error.message() +
                       "); is `iisan cache serve` running there?");
    }
    exchange(socket);
  }
  if (error && reply.empty()) throw CacheError("cache service " + endpoint + ": no reply (" + error.message() + ")");
  nlohmann::json json;
  try {
    json = data::ParseJsonInput<nlohmann::json>(reply, "cache service " + endpoint + "'s reply", {size_t{1} << 20, 16});
  } catch (const data::InputError&) {
    throw CacheError("cache service " + endpoint + ": the reply is not JSON (is " + endpoint + " a cache service?)");
  }
  if (!json.is_object()) throw CacheError("cache service " + endpoint + ": the reply is not a JSON object");
  return json;
}

}  // namespace iisan::cache
