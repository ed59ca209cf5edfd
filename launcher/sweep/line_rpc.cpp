#include "launcher/sweep/line_rpc.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <optional>

#include <boost/asio.hpp>
#include <glog/logging.h>

#include "cache/service.h"
#include "core/data/json_input.h"

namespace iisan::launcher::sweep {
namespace asio = boost::asio;
using Json = nlohmann::ordered_json;

namespace {

Json ErrorReply(const std::string& message) {
  Json reply;
  reply["ok"] = false;
  reply["error"] = message;
  return reply;
}

}  // namespace

struct LineServer::Impl {
  LineServerOptions options;
  LineHandler handler;
  asio::io_context io;
  std::optional<asio::local::stream_protocol::acceptor> local;
  std::optional<asio::ip::tcp::acceptor> tcp;
  std::string endpoint;
  std::atomic<int> open{0};

  template <typename Socket>
  struct Connection : std::enable_shared_from_this<Connection<Socket>> {
    Impl* impl;
    Socket socket;
    asio::steady_timer timer;
    std::string buffer, reply;
    Connection(Impl* owner, Socket s) : impl(owner), socket(std::move(s)), timer(owner->io) {}
    ~Connection() { --impl->open; }

    void Start() {
      auto self = this->shared_from_this();
      timer.expires_after(impl->options.read_timeout);
      timer.async_wait([self](const boost::system::error_code& error) {
        if (error) return;  // cancelled: the request arrived
        boost::system::error_code ignored;
        self->socket.close(ignored);
      });
      asio::async_read_until(socket, asio::dynamic_buffer(buffer, impl->options.max_request_bytes), '\n',
                             [self](const boost::system::error_code& error, size_t length) {
                               self->timer.cancel();
                               self->OnRequest(error, length);
                             });
    }

    void OnRequest(const boost::system::error_code& error, size_t length) {
      Json answer;
      if (error == asio::error::not_found) {
        answer = ErrorReply("request longer than " + std::to_string(impl->options.max_request_bytes) + " bytes");
      } else if (error) {
        return;  // closed, timed out or reset: nothing to answer
      } else {
        const std::string line = buffer.substr(0, length);
        try {
          const auto request = data::ParseJsonInput<Json>(line, "request", {impl->options.max_request_bytes, 32});
          answer = impl->handler(&request, "");
        } catch (const std::exception& parse_error) {
          answer = impl->handler(nullptr, parse_error.what());
        }
      }
      reply = answer.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
      auto self = this->shared_from_this();
      timer.expires_after(impl->options.read_timeout);
      timer.async_wait([self](const boost::system::error_code& e) {
        if (e) return;
        boost::system::error_code ignored;
        self->socket.close(ignored);
      });
      asio::async_write(socket, asio::buffer(reply), [self](const boost::system::error_code&, size_t) {
        self->timer.cancel();
        boost::system::error_code ignored;
        self->socket.close(ignored);
      });
    }
  };

  template <typename Acceptor>
  void Accept(Acceptor& acceptor) {
    acceptor.async_accept([this, &acceptor](const boost::system::error_code& error, auto socket) {
      if (error == asio::error::operation_aborted) return;
      if (!error) {
        if (open.load() >= options.max_connections) {
          LOG(WARNING) << endpoint << ": " << open.load() << " connections open (the cap): one refused";
          boost::system::error_code ignored;
          socket.close(ignored);
        } else {
          ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);
          ++open;
          std::make_shared<Connection<decltype(socket)>>(this, std::move(socket))->Start();
        }
      }
      Accept(acceptor);
    });
  }
};

LineServer::LineServer(LineServerOptions options, LineHandler handler) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
  auto& impl = *impl_;
  if (!impl.options.listen.empty()) {
    const auto [host, port] = cache::SplitHostPort(impl.options.listen);
    boost::system::error_code error;
    const auto address = asio::ip::make_address(host, error);
    if (error) throw std::runtime_error(impl.options.listen + ": the host must be an IP address");
    const asio::ip::tcp::endpoint endpoint(address, port);
    impl.tcp.emplace(impl.io);
    impl.tcp->open(endpoint.protocol());
    impl.tcp->set_option(asio::socket_base::reuse_address(true));
    impl.tcp->bind(endpoint, error);
    if (error) throw std::runtime_error(impl.options.listen + ": cannot listen (" + error.message() + ")");
    impl.tcp->listen();
    ::fcntl(impl.tcp->native_handle(), F_SETFD, FD_CLOEXEC);
    const auto bound = impl.tcp->local_endpoint();
    impl.endpoint = (address.is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(bound.port());
  } else {
    const std::filesystem::path path = impl.options.unix_path;
    if (path.string().size() >= 100) {
      throw std::runtime_error(path.string() + ": a Unix socket path must be shorter than 100 bytes (use a shorter "
                               "sweep directory or --listen 127.0.0.1:0)");
    }
    if (std::filesystem::exists(path)) {
      // A live server answers; a stale socket file from a killed one is replaced.
      asio::local::stream_protocol::socket probe(impl.io);
      boost::system::error_code error;
      probe.connect(asio::local::stream_protocol::endpoint(path.string()), error);
      if (!error) throw std::runtime_error(path.string() + ": another scheduler is serving this sweep");
      std::filesystem::remove(path);
    }
    const auto old_mask = ::umask(0077);  // the socket is created 0600
    try {
      impl.local.emplace(impl.io, asio::local::stream_protocol::endpoint(path.string()));
    } catch (const std::exception& error) {
      ::umask(old_mask);
      throw std::runtime_error(path.string() + ": cannot listen (" + error.what() + ")");
    }
    ::umask(old_mask);
    ::chmod(path.c_str(), 0600);
    // Worker processes must not inherit the listener: a killed scheduler's socket would stay
    // open in them and look alive to its restarted successor.
    ::fcntl(impl.local->native_handle(), F_SETFD, FD_CLOEXEC);
    impl.endpoint = "unix:" + path.string();
  }
}

LineServer::~LineServer() {
  Stop();
  if (impl_->local) std::filesystem::remove(impl_->options.unix_path);
}

std::string LineServer::endpoint() const { return impl_->endpoint; }

void LineServer::Run() {
  if (impl_->local) impl_->Accept(*impl_->local);
  if (impl_->tcp) impl_->Accept(*impl_->tcp);
  impl_->io.run();
}

void LineServer::Stop() { impl_->io.stop(); }

Json CallLine(const std::string& endpoint, const Json& request, std::chrono::milliseconds timeout) {
  asio::io_context io;
  std::string reply;
  boost::system::error_code failure = asio::error::timed_out;
  bool finished = false;
  const std::string line = request.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  auto exchange = [&](auto& socket, auto&& connect) {
    connect([&](const boost::system::error_code& error) {
      if (error) {
        failure = error;
        finished = true;
        return;
      }
      asio::async_write(socket, asio::buffer(line), [&](const boost::system::error_code& error, size_t) {
        if (error) {
          failure = error;
          finished = true;
          return;
        }
        asio::async_read_until(socket, asio::dynamic_buffer(reply, 16 << 20), '\n',
                               [&](const boost::system::error_code& error, size_t) {
                                 failure = error;
                                 finished = true;
                               });
      });
    });
    io.run_for(timeout);
    if (!finished) {
      boost::system::error_code ignored;
      socket.close(ignored);
    }
  };
  if (endpoint.rfind("unix:", 0) == 0) {
    asio::local::stream_protocol::socket socket(io);
    const asio::local::stream_protocol::endpoint target(endpoint.substr(5));
    exchange(socket, [&](auto handler) { socket.async_connect(target, handler); });
  } else {
    const auto [host, port] = cache::SplitHostPort(endpoint);
    boost::system::error_code error;
    const auto address = asio::ip::make_address(host, error);
    if (error) throw std::runtime_error("sweep scheduler " + endpoint + ": the host must be an IP address");
    asio::ip::tcp::socket socket(io);
    const asio::ip::tcp::endpoint target(address, port);
    exchange(socket, [&](auto handler) { socket.async_connect(target, handler); });
  }
  if (!finished) {
    throw std::runtime_error("sweep scheduler " + endpoint + ": no reply within " +
                             std::to_string(timeout.count()) + " ms");
  }
  if (failure && reply.empty()) {
    throw std::runtime_error("sweep scheduler " + endpoint + ": " + failure.message());
  }
  Json json;
  try {
    json = data::ParseJsonInput<Json>(reply, "reply", {size_t{16} << 20, 64});
  } catch (const std::exception&) {
    throw std::runtime_error("sweep scheduler " + endpoint + ": the reply is not JSON (is it a sweep scheduler?)");
  }
  if (!json.is_object()) throw std::runtime_error("sweep scheduler " + endpoint + ": the reply is not a JSON object");
  return json;
}

}  // namespace iisan::launcher::sweep
