// POSIX TCP sockets where every connect, accept, send and receive takes a deadline, so that a
// dead or stalled peer surfaces as a SocketError (timeout, closed, system) and never as a hang.
#pragma once

#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

namespace iisan::distributed {

using Deadline = std::chrono::steady_clock::time_point;

class SocketError : public std::runtime_error {
 public:
  enum class Kind { kTimeout, kClosed, kSystem };
  SocketError(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

class TcpSocket {
 public:
  TcpSocket() = default;
  ~TcpSocket();
  TcpSocket(TcpSocket&& other) noexcept;
  TcpSocket& operator=(TcpSocket&& other) noexcept;
  TcpSocket(const TcpSocket&) = delete;
  TcpSocket& operator=(const TcpSocket&) = delete;

  // Listens on every interface, or on 127.0.0.1 alone with `loopback_only` (all peers on this
  // machine); port 0 takes any free port (see local_port()).
  static TcpSocket Listen(int port, bool loopback_only = false);
  // Connects to host:port, retrying while nobody listens yet (the listener may start later
  // than its peers) until the deadline.
  static TcpSocket Connect(const std::string& host, int port, Deadline deadline);

  TcpSocket Accept(Deadline deadline);
  int local_port() const;
  // "HOST:PORT" of the other end ("?" when unknown), for logs.
  std::string peer_name() const;
  void SendAll(const void* data, size_t bytes, Deadline deadline);
  void RecvAll(void* data, size_t bytes, Deadline deadline);

 private:
  explicit TcpSocket(int fd) : fd_(fd) {}
  // Polls for `events`; throws SocketError(kTimeout) once the deadline has passed.
  void WaitFor(short events, Deadline deadline, std::string_view what) const;

  int fd_ = -1;
};

}  // namespace iisan::distributed
