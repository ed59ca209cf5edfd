// Non-blocking sockets driven by poll() against a deadline.
#include "distributed/tcp_socket.h"

#include <cerrno>
#include <cstring>
#include <thread>

#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace iisan::distributed {
namespace {

std::string ErrnoText(int error) { return std::strerror(error); }

void SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    throw SocketError(SocketError::Kind::kSystem, "fcntl(O_NONBLOCK): " + ErrnoText(errno));
  }
}

void SetNoDelay(int fd) {
  // Collectives are request/response exchanges: Nagle's algorithm would hold back small ones.
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

bool PeerGone(int error) { return error == EPIPE || error == ECONNRESET || error == ECONNABORTED; }

// One attempt at a non-blocking connect; returns the connected fd or -1 with `error` set.
int TryConnect(const addrinfo& address, Deadline deadline, int& error) {
  const int fd = socket(address.ai_family, address.ai_socktype, address.ai_protocol);
  if (fd < 0) {
    error = errno;
    return -1;
  }
  SetNonBlocking(fd);
  if (connect(fd, address.ai_addr, address.ai_addrlen) == 0) return fd;
  if (errno == EINPROGRESS) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0))) == 1) {
      socklen_t length = sizeof(error);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
      if (error == 0) return fd;
    } else {
      error = ETIMEDOUT;
    }
  } else {
    error = errno;
  }
  close(fd);
  return -1;
}

}  // namespace

TcpSocket::~TcpSocket() {
  if (fd_ >= 0) close(fd_);
}

TcpSocket::TcpSocket(TcpSocket&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

TcpSocket& TcpSocket::operator=(TcpSocket&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

std::string TcpSocket::peer_name() const {
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  if (getpeername(fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) return "?";
  char text[INET_ADDRSTRLEN] = {};
  if (!inet_ntop(AF_INET, &address.sin_addr, text, sizeof(text))) return "?";
  return std::string(text) + ":" + std::to_string(ntohs(address.sin_port));
}

TcpSocket TcpSocket::Listen(int port, bool loopback_only) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw SocketError(SocketError::Kind::kSystem, "socket: " + ErrnoText(errno));
  TcpSocket socket_owner(fd);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(loopback_only ? INADDR_LOOPBACK : INADDR_ANY);
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0 || listen(fd, SOMAXCONN) < 0) {
    throw SocketError(SocketError::Kind::kSystem, "cannot listen on port " + std::to_string(port) + ": " + ErrnoText(errno));
  }
  SetNonBlocking(fd);
  return socket_owner;
}

TcpSocket TcpSocket::Connect(const std::string& host, int port, Deadline deadline) {
  std::string last_error = "no attempt";
  while (true) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const int status = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
    if (status != 0) {
      last_error = gai_strerror(status);
    } else {
      int error = 0;
      for (addrinfo* a = found; a; a = a->ai_next) {
        const int fd = TryConnect(*a, deadline, error);
        if (fd >= 0) {
          freeaddrinfo(found);
          SetNoDelay(fd);
          return TcpSocket(fd);
        }
      }
      freeaddrinfo(found);
      last_error = ErrnoText(error);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      throw SocketError(SocketError::Kind::kTimeout,
                        "could not connect to " + host + ":" + std::to_string(port) + " (" + last_error + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

TcpSocket TcpSocket::Accept(Deadline deadline) {
  while (true) {
    const int fd = accept(fd_, nullptr, nullptr);
    if (fd >= 0) {
      SetNonBlocking(fd);
      SetNoDelay(fd);
      return TcpSocket(fd);
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      throw SocketError(SocketError::Kind::kSystem, "accept: " + ErrnoText(errno));
    }
    WaitFor(POLLIN, deadline, "a connection");
  }
}

int TcpSocket::local_port() const {
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  if (getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) < 0) {
    throw SocketError(SocketError::Kind::kSystem, "getsockname: " + ErrnoText(errno));
  }
  return ntohs(address.sin_port);
}

void TcpSocket::SendAll(const void* data, size_t bytes, Deadline deadline) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    // MSG_NOSIGNAL: a peer that died must be an error here, not a SIGPIPE that kills us silently.
    const ssize_t sent = send(fd_, p, bytes, MSG_NOSIGNAL);
    if (sent > 0) {
      p += sent;
      bytes -= static_cast<size_t>(sent);
    } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      WaitFor(POLLOUT, deadline, "the peer to accept data");
    } else if (sent < 0 && errno == EINTR) {
      continue;
    } else if (PeerGone(errno)) {
      throw SocketError(SocketError::Kind::kClosed, "connection closed by the peer");
    } else {
      throw SocketError(SocketError::Kind::kSystem, "send: " + ErrnoText(errno));
    }
  }
}

void TcpSocket::RecvAll(void* data, size_t bytes, Deadline deadline) {
  auto* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t got = recv(fd_, p, bytes, 0);
    if (got > 0) {
      p += got;
      bytes -= static_cast<size_t>(got);
    } else if (got == 0 || PeerGone(errno)) {
      throw SocketError(SocketError::Kind::kClosed, "connection closed by the peer");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      WaitFor(POLLIN, deadline, "data from the peer");
    } else if (errno != EINTR) {
      throw SocketError(SocketError::Kind::kSystem, "recv: " + ErrnoText(errno));
    }
  }
}

void TcpSocket::WaitFor(short events, Deadline deadline, std::string_view what) const {
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) throw SocketError(SocketError::Kind::kTimeout, "timed out waiting for " + std::string(what));
    pollfd p{fd_, events, 0};
    const int ready = poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (ready > 0) return;  // readable, writable, or an error that the next call reports
    if (ready < 0 && errno != EINTR) throw SocketError(SocketError::Kind::kSystem, "poll: " + ErrnoText(errno));
  }
}

}  // namespace iisan::distributed
