// The TCP star: joining (with the file rendezvous), the wire format, and one worker thread that
// runs the collectives in the order they were issued, so that asynchronous all-reduces started
// from autograd hooks keep the same order on every rank.
#include "distributed/tcp_communicator.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include <unistd.h>

#include <glog/logging.h>
#include <torch/torch.h>

#include "core/data/atomic_file.h"
#include "distributed/tcp_socket.h"

namespace iisan::distributed {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kMagic = 0x4e415349;  // "ISAN"

enum class OpKind : uint32_t { kAllReduce = 1, kBroadcast, kAllGather, kBarrier };

std::string_view OpName(OpKind kind) {
  switch (kind) {
    case OpKind::kAllReduce: return "all_reduce";
    case OpKind::kBroadcast: return "broadcast";
    case OpKind::kAllGather: return "all_gather";
    case OpKind::kBarrier: return "barrier";
  }
  return "collective";
}

// Ranks of one job run on machines of one architecture, so structs travel as raw bytes.
struct Hello {
  uint32_t magic;
  int32_t rank;
  int32_t world_size;
  char secret[64];  // the job's secret (JobSecret), zero-padded
};

// How long a connection may take to say hello before rank 0 drops it: a silent connection must
// not stall the join.
constexpr auto kHandshakeTimeout = std::chrono::seconds(5);

Hello MakeHello(int rank, int world_size, const std::string& secret) {
  Hello hello{};
  hello.magic = kMagic;
  hello.rank = rank;
  hello.world_size = world_size;
  std::memcpy(hello.secret, secret.data(), std::min(secret.size(), sizeof(hello.secret)));
  return hello;
}

// Compares every byte whatever differs first, so that the time taken says nothing of the secret.
bool SameSecret(const char (&a)[64], const char (&b)[64]) {
  unsigned char difference = 0;
  for (size_t i = 0; i < 64; ++i) difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  return difference == 0;
}

struct Header {
  uint32_t magic;
  OpKind kind;
  uint64_t sequence;
  uint64_t bytes;     // payload that follows
  int32_t dtype;      // c10::ScalarType
  int32_t argument;   // ReduceOp, or the root of a broadcast
  bool operator==(const Header&) const = default;
};

std::string HostName() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return name;
}

// One collective as this rank sees it: what it sends to rank 0 and what comes back.
struct Collective {
  OpKind kind;
  int argument = 0;
  torch::Tensor tensor;  // this rank's input (and, except for all-gather, its output)
  torch::Tensor output;  // all-gather: [world, ...]
};

struct Completion {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
};

class TcpWork : public Work {
 public:
  explicit TcpWork(std::shared_ptr<Completion> completion) : completion_(std::move(completion)) {}
  // No deadline here: the worker thread bounds every socket operation and ends the process on
  // failure, so a collective either completes or the process is gone.
  void Wait() override {
    std::unique_lock lock(completion_->mutex);
    completion_->cv.wait(lock, [&] { return completion_->done; });
  }

 private:
  std::shared_ptr<Completion> completion_;
};

class TcpCommunicator : public Communicator {
 public:
  TcpCommunicator(const WorldInfo& world, CollectiveOptions options)
      : rank_(world.rank), world_size_(world.world_size), options_(options), secret_(world.secret),
        local_only_(world.local_only) {
    if (secret_.size() > 64) throw std::invalid_argument("TCP communicator: the job's secret is longer than 64 bytes");
    if (secret_.empty() && rank_ == 0) {
      LOG(WARNING) << "TCP join without a secret (no " << kEnvJobSecret << ", not a Slurm job): any process that "
                   << "reaches the port can join as a rank";
    }
    const auto deadline = Clock::now() + options_.timeout;
    const auto address = ParseRendezvous(world.rendezvous);
    if (address.kind != RendezvousAddress::Kind::kTcp && address.kind != RendezvousAddress::Kind::kFile) {
      throw std::invalid_argument("TCP communicator: rendezvous '" + world.rendezvous + "' is not tcp: or file:");
    }
    try {
      if (rank_ == 0) {
        AcceptPeers(address, deadline);
      } else {
        JoinHub(address, deadline);
      }
    } catch (const SocketError& e) {
      throw CollectiveError("rank " + std::to_string(rank_) + "/" + std::to_string(world_size_) +
                            " (tcp): joining the world at " + world.rendezvous + " failed: " + e.what());
    }
    worker_ = std::thread([this] { WorkerLoop(); });
  }

  ~TcpCommunicator() override {
    {
      std::lock_guard lock(queue_mutex_);
      stopping_ = true;
    }
    queue_cv_.notify_all();
    worker_.join();
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string_view backend() const override { return "tcp"; }
  torch::Device device() const override { return torch::kCPU; }

  std::unique_ptr<Work> StartAllReduce(std::vector<torch::Tensor> tensors, ReduceOp op) override {
    CheckCollectiveInputs("all_reduce", tensors, device(), op);
    std::vector<Collective> collectives;
    for (auto& t : tensors) collectives.push_back({OpKind::kAllReduce, static_cast<int>(op), std::move(t), {}});
    return std::make_unique<TcpWork>(Enqueue(std::move(collectives)));
  }

  void Broadcast(torch::Tensor tensor, int root) override {
    CheckCollectiveInputs("broadcast", {tensor}, device());
    if (root < 0 || root >= world_size_) throw std::invalid_argument("broadcast: no rank " + std::to_string(root));
    TcpWork(Enqueue({{OpKind::kBroadcast, root, std::move(tensor), {}}})).Wait();
  }

  torch::Tensor AllGather(const torch::Tensor& tensor) override {
    CheckCollectiveInputs("all_gather", {tensor}, device());
    std::vector<int64_t> shape{world_size_};
    shape.insert(shape.end(), tensor.sizes().begin(), tensor.sizes().end());
    auto output = torch::empty(shape, tensor.options());
    TcpWork(Enqueue({{OpKind::kAllGather, 0, tensor, output}})).Wait();
    return output;
  }

  void Barrier() override { TcpWork(Enqueue({{OpKind::kBarrier, 0, {}, {}}})).Wait(); }

 private:
  void AcceptPeers(const RendezvousAddress& address, Deadline deadline) {
    expected_ = MakeHello(0, world_size_, secret_);
    const bool loopback = local_only_ || (address.kind == RendezvousAddress::Kind::kTcp &&
                                          (address.host == "127.0.0.1" || address.host == "localhost"));
    auto listener = TcpSocket::Listen(address.kind == RendezvousAddress::Kind::kTcp ? address.port : 0, loopback);
    fs::path published;
    if (address.kind == RendezvousAddress::Kind::kFile) published = Publish(address.dir, listener.local_port(), loopback);
    peers_.resize(world_size_);
    for (int joined = 1; joined < world_size_; ++joined) {
      TcpSocket peer;
      try {
        peer = listener.Accept(deadline);
      } catch (const SocketError& e) {
        if (e.kind() != SocketError::Kind::kTimeout) throw;
        std::string missing;
        for (int r = 1; r < world_size_; ++r) {
          if (!peers_[r].has_value()) missing += " " + std::to_string(r);
        }
        throw SocketError(e.kind(), "only " + std::to_string(joined) + " of " + std::to_string(world_size_) +
                                        " ranks joined before the timeout; missing rank(s)" + missing);
      }
      // A stray, silent, malformed or secretless connection is dropped and logged; the join
      // goes on until every rank has said a valid hello or the deadline passes.
      const std::string from = peer.peer_name();
      Hello hello{};
      try {
        peer.RecvAll(&hello, sizeof(hello), std::min<Deadline>(deadline, Clock::now() + kHandshakeTimeout));
      } catch (const SocketError& e) {
        LOG(WARNING) << "rank 0/" << world_size_ << " (tcp): dropped a connection from " << from
                     << " that sent no valid hello: " << e.what();
        --joined;
        continue;
      }
      std::string problem;
      if (hello.magic != kMagic) {
        problem = "not an iisan rank";
      } else if (!SameSecret(hello.secret, expected_.secret)) {
        problem = "without this job's secret (" + std::string(kEnvJobSecret) + ")";
      } else if (hello.world_size != world_size_ || hello.rank <= 0 || hello.rank >= world_size_) {
        problem = "claiming rank " + std::to_string(hello.rank) + " of " + std::to_string(hello.world_size) +
                  " in a world of " + std::to_string(world_size_);
      } else if (peers_[hello.rank].has_value()) {
        problem = "claiming rank " + std::to_string(hello.rank) + ", which has joined already";
      }
      if (!problem.empty()) {
        LOG(WARNING) << "rank 0/" << world_size_ << " (tcp): dropped a connection from " << from << ": " << problem;
        --joined;
        continue;
      }
      peers_[hello.rank] = std::move(peer);
    }
    // Everyone has joined: the address is no longer needed, and removing it lets a later job
    // reuse the folder.
    if (!published.empty()) fs::remove(published);
    const Hello welcome = expected_;
    for (int r = 1; r < world_size_; ++r) peers_[r]->SendAll(&welcome, sizeof(welcome), deadline);
  }

  // Writes "HOST PORT" atomically (a rename), so that a peer never reads half an address.
  static fs::path Publish(const fs::path& dir, int port, bool loopback) {
    fs::create_directories(dir);
    const auto path = dir / kTcpAddressFile;
    if (fs::exists(path)) {
      throw SocketError(SocketError::Kind::kSystem, path.string() +
                                                        " already exists (left by another job?): every job needs "
                                                        "a fresh rendezvous folder");
    }
    try {
      data::WriteFileAtomically(path, (loopback ? std::string("127.0.0.1") : HostName()) + " " + std::to_string(port) + "\n");
    } catch (const data::FileWriteError& error) {
      throw SocketError(SocketError::Kind::kSystem, error.what());
    }
    return path;
  }

  void JoinHub(const RendezvousAddress& address, Deadline deadline) {
    std::string host = address.host;
    int port = address.port;
    if (address.kind == RendezvousAddress::Kind::kFile) {
      const auto path = fs::path(address.dir) / kTcpAddressFile;
      while (!(std::ifstream(path) >> host >> port)) {
        if (Clock::now() >= deadline) {
          throw SocketError(SocketError::Kind::kTimeout, "rank 0 never published its address in " + path.string());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (host == HostName()) host = "127.0.0.1";
    }
    hub_ = TcpSocket::Connect(host, port, deadline);
    const Hello hello = MakeHello(rank_, world_size_, secret_);
    hub_.SendAll(&hello, sizeof(hello), deadline);
    Hello welcome{};
    hub_.RecvAll(&welcome, sizeof(welcome), deadline);
    if (welcome.magic != kMagic || welcome.rank != 0 || welcome.world_size != world_size_ ||
        !SameSecret(welcome.secret, hello.secret)) {
      throw SocketError(SocketError::Kind::kSystem,
                        "rank 0 at " + host + ":" + std::to_string(port) + " answered " +
                            (welcome.magic != kMagic || !SameSecret(welcome.secret, hello.secret)
                                 ? std::string("without this job's magic and secret (another program or job?)")
                                 : "as rank " + std::to_string(welcome.rank) + " of a world of " +
                                       std::to_string(welcome.world_size)));
    }
  }

  std::shared_ptr<Completion> Enqueue(std::vector<Collective> collectives) {
    auto completion = std::make_shared<Completion>();
    {
      std::lock_guard lock(queue_mutex_);
      queue_.push_back({std::move(collectives), completion});
    }
    queue_cv_.notify_one();
    return completion;
  }

  void WorkerLoop() {
    while (true) {
      Task task;
      {
        std::unique_lock lock(queue_mutex_);
        queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      for (auto& collective : task.collectives) Run(collective);
      {
        std::lock_guard lock(task.completion->mutex);
        task.completion->done = true;
      }
      task.completion->cv.notify_all();
    }
  }

  void Run(Collective& c) {
    const uint64_t sequence = next_sequence_++;
    const int64_t bytes = c.tensor.defined() ? c.tensor.nbytes() : 0;
    Header header{kMagic, c.kind, sequence, 0, c.tensor.defined() ? static_cast<int32_t>(c.tensor.scalar_type()) : -1,
                  c.argument};
    const auto start = Clock::now();
    int peer = 0;  // whom we were talking to when something failed
    try {
      if (rank_ == 0) {
        RunOnHub(c, header, bytes, start + options_.timeout, peer);
      } else {
        RunOnPeer(c, header, bytes, start + options_.timeout, start + options_.timeout * 3 / 2);
      }
    } catch (const SocketError& e) {
      AbortJob(FailureMessage(c, sequence, bytes, e, peer));
    } catch (const std::exception& e) {
      AbortJob(DescribeCollective(*this, OpName(c.kind), sequence, bytes) + " failed: " + e.what());
    }
  }

  // Bytes that `rank` contributes to a collective, and the bytes of the result.
  int64_t ContributionBytes(const Collective& c, int rank, int64_t bytes) const {
    if (c.kind == OpKind::kBarrier) return 0;
    if (c.kind == OpKind::kBroadcast) return rank == c.argument ? bytes : 0;
    return bytes;
  }
  int64_t ResultBytes(const Collective& c, int64_t bytes) const {
    return c.kind == OpKind::kAllGather ? bytes * world_size_ : bytes;
  }

  void RunOnHub(Collective& c, Header header, int64_t bytes, Deadline deadline, int& peer) {
    torch::Tensor scratch;
    if (c.kind == OpKind::kAllGather) c.output[0].copy_(c.tensor);
    for (peer = 1; peer < world_size_; ++peer) {
      Header theirs{};
      peers_[peer]->RecvAll(&theirs, sizeof(theirs), deadline);
      header.bytes = static_cast<uint64_t>(ContributionBytes(c, peer, bytes));
      if (!(theirs == header)) throw SocketError(SocketError::Kind::kSystem, Mismatch(header, theirs));
      if (header.bytes == 0) continue;
      if (c.kind == OpKind::kAllReduce) {
        if (!scratch.defined()) scratch = torch::empty_like(c.tensor);
        peers_[peer]->RecvAll(scratch.data_ptr(), header.bytes, deadline);
        // Rank order, on every rank's behalf: the sum is the same whoever computes it.
        c.tensor.add_(scratch);
      } else {
        torch::Tensor target = c.kind == OpKind::kAllGather ? c.output[peer] : c.tensor;
        peers_[peer]->RecvAll(target.data_ptr(), header.bytes, deadline);
      }
    }
    if (c.kind == OpKind::kAllReduce && static_cast<ReduceOp>(c.argument) == ReduceOp::kAverage) {
      c.tensor.div_(world_size_);
    }
    header.bytes = static_cast<uint64_t>(ResultBytes(c, bytes));
    const void* result = c.kind == OpKind::kAllGather ? c.output.data_ptr() : bytes ? c.tensor.data_ptr() : nullptr;
    for (peer = 1; peer < world_size_; ++peer) {
      peers_[peer]->SendAll(&header, sizeof(header), deadline);
      peers_[peer]->SendAll(result, header.bytes, deadline);
    }
  }

  void RunOnPeer(Collective& c, Header header, int64_t bytes, Deadline send_deadline, Deadline reply_deadline) {
    header.bytes = static_cast<uint64_t>(ContributionBytes(c, rank_, bytes));
    hub_.SendAll(&header, sizeof(header), send_deadline);
    if (header.bytes) hub_.SendAll(c.tensor.data_ptr(), header.bytes, send_deadline);
    Header reply{};
    hub_.RecvAll(&reply, sizeof(reply), reply_deadline);
    header.bytes = static_cast<uint64_t>(ResultBytes(c, bytes));
    if (!(reply == header)) throw SocketError(SocketError::Kind::kSystem, Mismatch(header, reply));
    void* result = c.kind == OpKind::kAllGather ? c.output.data_ptr() : bytes ? c.tensor.data_ptr() : nullptr;
    hub_.RecvAll(result, reply.bytes, reply_deadline);
  }

  static std::string Mismatch(const Header& expected, const Header& got) {
    std::ostringstream out;
    out << "expected " << OpName(expected.kind) << " #" << expected.sequence << " of " << expected.bytes
        << " B but got " << (got.magic == kMagic ? OpName(got.kind) : "garbage") << " #" << got.sequence << " of "
        << got.bytes << " B: ranks issue collectives in different orders, shapes or dtypes";
    return out.str();
  }

  std::string FailureMessage(const Collective& c, uint64_t sequence, int64_t bytes, const SocketError& e,
                             int peer) const {
    std::ostringstream out;
    out << DescribeCollective(*this, OpName(c.kind), sequence, bytes) << " failed: ";
    const int other = rank_ == 0 ? peer : 0;
    out << "rank " << other << (rank_ == 0 ? "" : " (the hub)");
    switch (e.kind()) {
      case SocketError::Kind::kTimeout:
        out << " did not take part within "
            << std::chrono::duration<double>(rank_ == 0 ? options_.timeout : options_.timeout * 3 / 2).count()
            << " s (stalled or hung)";
        break;
      case SocketError::Kind::kClosed: out << " closed its connection (its process ended)"; break;
      case SocketError::Kind::kSystem: out << ": " << e.what(); break;
    }
    return out.str();
  }

  struct Task {
    std::vector<Collective> collectives;
    std::shared_ptr<Completion> completion;
  };

  const int rank_;
  const int world_size_;
  const CollectiveOptions options_;
  const std::string secret_;  // presented at the join (JobSecret)
  const bool local_only_;     // every rank on this machine: listen on loopback
  Hello expected_{};          // rank 0: the hello every rank must send (and the welcome)
  std::vector<std::optional<TcpSocket>> peers_;  // rank 0: one per peer rank (index 0 unused)
  TcpSocket hub_;                                // other ranks: the connection to rank 0
  uint64_t next_sequence_ = 0;                   // worker thread only

  std::mutex queue_mutex_;
  std::condition_variable queue_cv_;
  std::deque<Task> queue_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace

std::unique_ptr<Communicator> ConnectTcp(const WorldInfo& world, CollectiveOptions options) {
  return std::make_unique<TcpCommunicator>(world, options);
}

}  // namespace iisan::distributed
