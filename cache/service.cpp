// The service: an io_context on the calling thread accepts connections and reads request
// lines; ensure requests go to a worker pool, whose threads resolve the spec, join or start the
// key's flight and, for the first request of a key, run the build. Replies travel back to the
// connection's executor. One request is handled at a time per connection. Every wait on a
// client (its request, its taking of a reply) has a deadline; the wait for a build has none, and
// a heartbeat line tells the client the service is alive.
#include "cache/service.h"

#include <sys/stat.h>
#include <sys/un.h>

#include <array>
#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

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

}  // namespace

bool SameToken(const std::string& given, const std::string& expected) {
  unsigned char diff = given.size() != expected.size();
  for (size_t i = 0; i < expected.size(); ++i) {
    diff |= static_cast<unsigned char>((i < given.size() ? given[i] : 0) ^ expected[i]);
  }
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

namespace {

std::string DumpLine(const nlohmann::json& reply) {
  return reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string Seconds(std::chrono::milliseconds duration) {
  std::ostringstream out;
  out << static_cast<double>(duration.count()) / 1000.0 << " s";
  return out.str();
}

// What a session does once a line has been written.
enum class AfterWrite { kNothing, kRead, kClose };

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
  // Before `io`: sessions, destroyed with the io_context's handlers, count themselves out here.
  std::atomic<int> open_sessions{0};
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
    Session(Impl* impl, Socket socket)
        : impl(impl), socket(std::move(socket)), deadline(impl->io), heartbeat(impl->io) {
      ++impl->open_sessions;
    }
    ~Session() { --impl->open_sessions; }
    Impl* impl;
    Socket socket;
    std::string buffer;
    std::array<char, 65536> scratch{};
    size_t drained = 0;
    // One deadline at a time (reading a request, writing a line, draining); a handler of an
    // earlier one that fires late sees another generation and does nothing.
    asio::steady_timer deadline;
    uint64_t deadline_generation = 0;
    asio::steady_timer heartbeat;
    uint64_t request_number = 0;  // the heartbeats of a request stop with its reply
    bool awaiting_reply = false;
    std::deque<std::pair<std::string, AfterWrite>> outbox;
    bool writing = false;
    bool closed = false;

    void Read() {
      ArmDeadline("sent no whole request");
      auto self = this->shared_from_this();
      asio::async_read_until(socket, asio::dynamic_buffer(buffer, impl->options.max_request_bytes), '\n',
                             [self](const boost::system::error_code& error, size_t length) {
                               self->OnLine(error, length);
                             });
    }

    void OnLine(const boost::system::error_code& error, size_t length) {
      Disarm();
      if (error == asio::error::not_found) {
        Send(ServiceErrorReply("request exceeds " + std::to_string(impl->options.max_request_bytes) +
                               " bytes (or has no newline); the connection is closed"),
             AfterWrite::kClose);
        return;
      }
      if (error) return;  // closed by the client, or by the deadline: the session ends
      std::string line = buffer.substr(0, length - 1);
      buffer.erase(0, length);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) return Read();
      awaiting_reply = true;
      ScheduleHeartbeat(++request_number);
      auto self = this->shared_from_this();
      impl->Handle(line, [self](nlohmann::json reply) {
        asio::post(self->socket.get_executor(), [self, reply = std::move(reply)] {
          self->awaiting_reply = false;
          self->heartbeat.cancel();
          self->Send(reply, AfterWrite::kRead);
        });
      });
    }

    void ScheduleHeartbeat(uint64_t request) {
      auto self = this->shared_from_this();
      heartbeat.expires_after(impl->options.heartbeat);
      heartbeat.async_wait([self, request](const boost::system::error_code& error) {
        if (error || self->closed || !self->awaiting_reply || request != self->request_number) return;
        self->Enqueue(DumpLine({{"waiting", true}}), AfterWrite::kNothing);
        self->ScheduleHeartbeat(request);
      });
    }

    // Tells a client the service is at its connection cap, and closes.
    void Refuse() {
      Send({{"ok", false}, {"busy", true},
            {"error", "the cache service is serving its maximum of " + std::to_string(impl->options.max_connections) +
                      " connections (cache serve --max-connections); try again shortly"}},
           AfterWrite::kClose);
    }

    void Send(const nlohmann::json& reply, AfterWrite after) { Enqueue(DumpLine(reply), after); }

    void Enqueue(std::string line, AfterWrite after) {
      if (closed) return;  // a reply for a client that has gone
      outbox.emplace_back(std::move(line), after);
      if (!writing) WriteNext();
    }

    void WriteNext() {
      writing = true;
      ArmDeadline("took no reply");
      auto self = this->shared_from_this();
      asio::async_write(socket, asio::buffer(outbox.front().first),
                        [self](const boost::system::error_code& error, size_t) {
                          self->writing = false;
                          self->Disarm();
                          // The client has gone, or the deadline passed (and Close emptied the outbox).
                          if (error || self->closed) return self->Close();
                          const AfterWrite after = self->outbox.front().second;
                          self->outbox.pop_front();
                          if (after == AfterWrite::kClose) {
                            boost::system::error_code ignored;
                            self->socket.shutdown(asio::socket_base::shutdown_send, ignored);
                            self->ArmDeadline("kept its connection open after an error reply");
                            self->Drain();
                          } else if (!self->outbox.empty()) {
                            self->WriteNext();
                          } else if (after == AfterWrite::kRead) {
                            self->Read();
                          }
                        });
    }

    // Reads and drops what the client still sends, until it closes (or too much has come, or
    // the deadline passes).
    void Drain() {
      auto self = this->shared_from_this();
      socket.async_read_some(asio::buffer(scratch), [self](const boost::system::error_code& error, size_t n) {
        self->drained += n;
        if (error || self->drained > kMaxDrainBytes) {
          self->Close();
          return;
        }
        self->Drain();
      });
    }

    void ArmDeadline(const char* what) {
      const uint64_t generation = ++deadline_generation;
      auto self = this->shared_from_this();
      deadline.expires_after(impl->options.idle_timeout);
      deadline.async_wait([self, generation, what](const boost::system::error_code& error) {
        if (error || generation != self->deadline_generation) return;
        LOG(WARNING) << "cache service: closing a connection that " << what << " within "
                     << Seconds(self->impl->options.idle_timeout) << " (--idle-timeout)";
        self->Close();
      });
    }

    void Disarm() {
      ++deadline_generation;
      deadline.cancel();
    }

    // Cancels every pending operation: their handlers run with an error and drop the session.
    void Close() {
      closed = true;
      boost::system::error_code ignored;
      socket.close(ignored);
      outbox.clear();
      deadline.cancel();
      heartbeat.cancel();
    }
  };

  template <class Acceptor>
  void Accept(Acceptor& acceptor) {
    acceptor.async_accept([this, &acceptor](const boost::system::error_code& error, auto socket) {
      if (error == asio::error::operation_aborted) return;
      if (error) {
        // Out of descriptors, say: wait a little rather than spin, and keep serving.
        LOG_EVERY_N(WARNING, 100) << "cache service: accepting a connection failed (" << error.message() << ")";
        auto retry = std::make_shared<asio::steady_timer>(io, std::chrono::milliseconds(100));
        retry->async_wait([this, &acceptor, retry](const boost::system::error_code& wait_error) {
          if (!wait_error) Accept(acceptor);
        });
        return;
      }
      using Socket = std::decay_t<decltype(socket)>;
      const int open = open_sessions.load();
      if (open >= 2 * options.max_connections) {
        // Past twice the cap even the refusals are too many to answer: close at once.
        LOG_EVERY_N(WARNING, 100) << "cache service: " << open << " connections open; closing a new one unanswered";
      } else if (open >= options.max_connections) {
        LOG_EVERY_N(WARNING, 100) << "cache service: " << open << " connections open, the most it serves "
                                  << "(--max-connections " << options.max_connections << "); refusing a new one";
        std::make_shared<Session<Socket>>(this, std::move(socket))->Refuse();
      } else {
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
            {"requests_served", requests_served}, {"connections", open_sessions.load()},
            {"cache_dir", options.cache_dir.string()}};
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
        RequireInsideCacheDir(options.cache_dir, path, "key " + request.key);
        const auto header = ReadStateFileHeader(path);
        if (header.fingerprint != request.key) {
          throw CacheError(path.string() + ": holds key " + header.fingerprint + ", not " + request.key);
        }
        return reply({{"ok", true}, {"key", request.key}, {"path", std::filesystem::absolute(path).string()},
                      {"built", false}});
      }
      const auto target = resolver(request.config);
      RequireInsideCacheDir(options.cache_dir, target.path, "key " + target.key);
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
    // Created 0600 (owner only: a private socket needs no token): the umask applies at bind, so
    // no other user can connect in the moment a chmod after it would leave open.
    const mode_t umask_before = ::umask(0177);
    try {
      impl.local_acceptor.emplace(impl.io, asio::local::stream_protocol::endpoint(path.string()));
    } catch (...) {
      ::umask(umask_before);
      throw;
    }
    ::umask(umask_before);
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
            << impl_->options.workers << " workers, requests up to " << impl_->options.max_request_bytes << " bytes, "
            << "at most " << impl_->options.max_connections << " connections, idle ones closed after "
            << Seconds(impl_->options.idle_timeout) << (impl_->options.token.empty() ? "" : ", token required") << ")";
  impl_->io.run();
}

void CacheService::Stop() { impl_->io.stop(); }

namespace {

using Clock = std::chrono::steady_clock;

// Runs `io` until the one operation that `start` begins completes, or until `timeout` passes;
// then `cancel` aborts it and the result is timed_out.
template <class Start, class Cancel>
boost::system::error_code RunWithTimeout(asio::io_context& io, std::chrono::milliseconds timeout, Start start,
                                         Cancel cancel) {
  std::optional<boost::system::error_code> result;
  start([&result](const boost::system::error_code& error, auto&&...) { result = error; });
  io.restart();
  io.run_for(std::max(timeout, std::chrono::milliseconds(0)));
  if (result) return *result;
  cancel();
  io.restart();
  io.run();  // the aborted operation's handler
  return asio::error::timed_out;
}

std::chrono::milliseconds Until(Clock::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
}

// One connection, one request, the reply (after any heartbeats). Connecting must finish by
// `connect_deadline`; after that, each line must come within options.reply_timeout.
class ServiceConnection {
 public:
  ServiceConnection(std::string endpoint, const ServiceCallOptions& options)
      : endpoint_(std::move(endpoint)), options_(options) {}

  nlohmann::json Call(const nlohmann::json& request, Clock::time_point connect_deadline) {
    const bool unix_socket = endpoint_.rfind("unix:", 0) == 0 || endpoint_.find('/') != std::string::npos;
    if (unix_socket) {
      const std::string path = endpoint_.rfind("unix:", 0) == 0 ? endpoint_.substr(5) : endpoint_;
      LocalSocket socket(io_);
      const asio::local::stream_protocol::endpoint address(path);
      CheckConnected(RunWithTimeout(
          io_, Until(connect_deadline), [&](auto done) { socket.async_connect(address, done); },
          [&] { Close(socket); }));
      return Exchange(socket, request);
    }
    const auto [host, port] = SplitHostPort(endpoint_);
    asio::ip::tcp::resolver resolver(io_);
    asio::ip::tcp::resolver::results_type addresses;
    CheckConnected(RunWithTimeout(
        io_, Until(connect_deadline),
        [&](auto done) {
          resolver.async_resolve(host, std::to_string(port),
                                 [&addresses, done](const boost::system::error_code& error, auto results) {
                                   addresses = results;
                                   done(error);
                                 });
        },
        [&] { resolver.cancel(); }));
    TcpSocket socket(io_);
    CheckConnected(RunWithTimeout(
        io_, Until(connect_deadline), [&](auto done) { asio::async_connect(socket, addresses, done); },
        [&] { Close(socket); }));
    return Exchange(socket, request);
  }

 private:
  template <class Socket>
  static void Close(Socket& socket) {
    boost::system::error_code ignored;
    socket.close(ignored);
  }

  void CheckConnected(const boost::system::error_code& error) const {
    if (error == asio::error::timed_out) {
      throw CacheError("cache service " + endpoint_ + ": no connection within " +
                       Seconds(options_.connect_timeout) + "; is `iisan cache serve` running there and reachable? "
                       "(the wait is cache.service_timeout_s)");
    }
    if (error) {
      throw CacheError("cache service " + endpoint_ + ": cannot connect (" + error.message() +
                       "); is `iisan cache serve` running there?");
    }
  }

  [[noreturn]] void Silent(const std::string& what) const {
    throw CacheError("cache service " + endpoint_ + ": " + what + " within " + Seconds(options_.reply_timeout) +
                     " (a working service sends a line every " + Seconds(kDefaultHeartbeat) + "); it is stuck or "
                     "unreachable: check its log and restart it, or raise cache.service_timeout_s");
  }

  template <class Socket>
  nlohmann::json Exchange(Socket& socket, const nlohmann::json& request) {
    const std::string line = DumpLine(request);
    auto error = RunWithTimeout(
        io_, options_.reply_timeout, [&](auto done) { asio::async_write(socket, asio::buffer(line), done); },
        [&] { Close(socket); });
    if (error == asio::error::timed_out) Silent("did not take the request");
    // A write error (the service closed) still leaves its reply, if it sent one, to be read.
    std::string buffer;
    for (;;) {
      error = RunWithTimeout(
          io_, options_.reply_timeout,
          [&](auto done) { asio::async_read_until(socket, asio::dynamic_buffer(buffer, kMaxReplyBytes), '\n', done); },
          [&] { Close(socket); });
      if (error == asio::error::timed_out) Silent("sent no reply");
      const auto newline = buffer.find('\n');
      if (error == asio::error::not_found) {
        throw CacheError("cache service " + endpoint_ + ": a reply line longer than " + std::to_string(kMaxReplyBytes) +
                         " bytes (is " + endpoint_ + " a cache service?)");
      }
      if (newline == std::string::npos) {
        throw CacheError("cache service " + endpoint_ + ": no reply (" + error.message() + ")");
      }
      auto reply = ParseReply(buffer.substr(0, newline));
      buffer.erase(0, newline + 1);
      if (reply.size() == 1 && reply.contains("waiting") && reply["waiting"] == true) continue;  // a heartbeat
      return reply;
    }
  }

  nlohmann::json ParseReply(const std::string& line) const {
    nlohmann::json json;
    try {
      json = data::ParseJsonInput<nlohmann::json>(line, "cache service " + endpoint_ + "'s reply", {kMaxReplyBytes, 16});
    } catch (const data::InputError&) {
      throw CacheError("cache service " + endpoint_ + ": the reply is not JSON (is " + endpoint_ + " a cache service?)");
    }
    if (!json.is_object()) throw CacheError("cache service " + endpoint_ + ": the reply is not a JSON object");
    return json;
  }

  static constexpr size_t kMaxReplyBytes = size_t{1} << 20;
  std::string endpoint_;
  ServiceCallOptions options_;
  asio::io_context io_;
};

}  // namespace

nlohmann::json CallCacheService(const std::string& endpoint, const nlohmann::json& request,
                                const ServiceCallOptions& options) {
  // A service at its connection cap refuses before it reads the request: try again, until the
  // connect timeout.
  const auto connect_deadline = Clock::now() + options.connect_timeout;
  auto pause = std::chrono::milliseconds(50);
  for (;;) {
    auto reply = ServiceConnection(endpoint, options).Call(request, connect_deadline);
    if (!(reply.contains("busy") && reply["busy"] == true)) return reply;
    if (Clock::now() + pause >= connect_deadline) {
      throw CacheError("cache service " + endpoint + ": still at its connection cap after " +
                       Seconds(options.connect_timeout) + "; try again later, or raise its --max-connections");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(2 * pause, std::chrono::milliseconds(2000));
  }
}

}  // namespace iisan::cache
