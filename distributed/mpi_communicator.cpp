// MPI backend: nonblocking collectives on a private duplicate of MPI_COMM_WORLD, polled
// against a deadline, with MPI calls serialised by a mutex (autograd hooks may start
// all-reduces from another thread than the one that waits).
#include "distributed/mpi_communicator.h"

#include <mpi.h>

#include <climits>
#include <mutex>
#include <sstream>
#include <thread>

#include <glog/logging.h>
#include <torch/torch.h>

namespace iisan::distributed {
namespace {

using Clock = std::chrono::steady_clock;

// MPI may be initialised once per process and must be finalised before exit.
class MpiRuntime {
 public:
  static void EnsureInitialized() { static MpiRuntime runtime; }

 private:
  MpiRuntime() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) return;
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    owned_ = true;
    if (provided < MPI_THREAD_SERIALIZED) {
      throw CollectiveError("MPI provides thread level " + std::to_string(provided) +
                            "; IISAN needs MPI_THREAD_SERIALIZED (calls from several threads, one at a time)");
    }
  }
  ~MpiRuntime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Finalize();
  }
  bool owned_ = false;
};

std::string MpiErrorText(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, length);
}

MPI_Datatype ReduceType(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat: return MPI_FLOAT;
    case torch::kDouble: return MPI_DOUBLE;
    case torch::kInt: return MPI_INT32_T;
    case torch::kLong: return MPI_INT64_T;
    case torch::kByte: return MPI_UINT8_T;
    default:
      throw std::invalid_argument("MPI all-reduce: " + std::string(c10::toString(type)) +
                                  " is not supported (float32, float64, int32, int64, uint8)");
  }
}

int CountOf(int64_t count, std::string_view op) {
  // MPI counts are ints; buckets are far smaller, so a larger one is a caller's mistake.
  if (count > INT_MAX) throw std::invalid_argument(std::string(op) + ": more than INT_MAX elements for MPI");
  return static_cast<int>(count);
}

class MpiCommunicator;

class MpiWork : public Work {
 public:
  MpiWork(MpiCommunicator& comm, std::vector<MPI_Request> requests, std::string description,
          std::vector<torch::Tensor> to_average)
      : comm_(comm), requests_(std::move(requests)), description_(std::move(description)),
        to_average_(std::move(to_average)) {}
  void Wait() override;

 private:
  MpiCommunicator& comm_;
  std::vector<MPI_Request> requests_;
  std::string description_;
  std::vector<torch::Tensor> to_average_;
};

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(const WorldInfo& world, CollectiveOptions options) : options_(options) {
    MpiRuntime::EnsureInitialized();
    // A private communicator: our collectives cannot match another library's on the world's.
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &world_size_);
    if (rank_ != world.rank || world_size_ != world.world_size) {
      std::ostringstream message;
      message << "MPI reports rank " << rank_ << " of " << world_size_ << " but the environment says " << world.Describe()
              << ": was the job started by a launcher that MPI does not know (e.g. srun without --mpi=pmix)?";
      throw CollectiveError(message.str());
    }
  }

  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string_view backend() const override { return "mpi"; }
  torch::Device device() const override { return torch::kCPU; }

  std::unique_ptr<Work> StartAllReduce(std::vector<torch::Tensor> tensors, ReduceOp op) override {
    CheckCollectiveInputs("all_reduce", tensors, device(), op);
    std::lock_guard lock(mutex_);
    const auto description = DescribeCollective(*this, "all_reduce", next_sequence_++, TotalBytes(tensors),
                                                static_cast<int>(tensors.size()));
    // Every argument is checked before the first request starts: a mistake must not leave
    // this rank with half a collective in flight.
    std::vector<MPI_Datatype> types;
    std::vector<int> counts;
    for (const auto& t : tensors) {
      types.push_back(ReduceType(t.scalar_type()));
      counts.push_back(CountOf(t.numel(), "all_reduce"));
    }
    std::vector<MPI_Request> requests(tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      Check(MPI_Iallreduce(MPI_IN_PLACE, tensors[i].data_ptr(), counts[i], types[i], MPI_SUM, comm_, &requests[i]),
            description);
    }
    // MPI has no average: sum, then divide once the sum is complete.
    if (op != ReduceOp::kAverage) tensors.clear();
    return std::make_unique<MpiWork>(*this, std::move(requests), description, std::move(tensors));
  }

  void Broadcast(torch::Tensor tensor, int root) override {
    CheckCollectiveInputs("broadcast", {tensor}, device());
    if (root < 0 || root >= world_size_) throw std::invalid_argument("broadcast: no rank " + std::to_string(root));
    Start("broadcast", tensor.nbytes(), [&](MPI_Request* request) {
      return MPI_Ibcast(tensor.data_ptr(), CountOf(tensor.nbytes(), "broadcast"), MPI_BYTE, root, comm_, request);
    })->Wait();
  }

  torch::Tensor AllGather(const torch::Tensor& tensor) override {
    CheckCollectiveInputs("all_gather", {tensor}, device());
    std::vector<int64_t> shape{world_size_};
    shape.insert(shape.end(), tensor.sizes().begin(), tensor.sizes().end());
    auto output = torch::empty(shape, tensor.options());
    const int count = CountOf(tensor.nbytes(), "all_gather");
    Start("all_gather", tensor.nbytes(), [&](MPI_Request* request) {
      return MPI_Iallgather(tensor.data_ptr(), count, MPI_BYTE, output.data_ptr(), count, MPI_BYTE, comm_, request);
    })->Wait();
    return output;
  }

  void Barrier() override {
    Start("barrier", -1, [&](MPI_Request* request) { return MPI_Ibarrier(comm_, request); })->Wait();
  }

  // One MPI_Testall under the lock; true once every request has completed.
  bool Test(std::vector<MPI_Request>& requests, const std::string& description) {
    std::lock_guard lock(mutex_);
    int done = 0;
    Check(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE), description);
    return done != 0;
  }

  [[noreturn]] void Abort(const std::string& message) {
    LOG(ERROR) << message;
    google::FlushLogFiles(google::GLOG_INFO);
    // Ends every rank of the job, not just this one: the others are blocked in this collective.
    MPI_Abort(MPI_COMM_WORLD, kCollectiveFailureExitCode);
    std::_Exit(kCollectiveFailureExitCode);
  }

  std::chrono::milliseconds timeout() const { return options_.timeout; }

 private:
  template <typename StartFn>
  std::unique_ptr<Work> Start(std::string_view op, int64_t bytes, StartFn start) {
    std::lock_guard lock(mutex_);
    auto description = DescribeCollective(*this, op, next_sequence_++, bytes);
    std::vector<MPI_Request> requests(1);
    Check(start(&requests[0]), description);
    return std::make_unique<MpiWork>(*this, std::move(requests), std::move(description), std::vector<torch::Tensor>{});
  }

  void Check(int code, const std::string& description) {
    if (code != MPI_SUCCESS) Abort(description + " failed: " + MpiErrorText(code));
  }

  const CollectiveOptions options_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int world_size_ = 1;
  std::mutex mutex_;
  uint64_t next_sequence_ = 0;
};

void MpiWork::Wait() {
  const auto deadline = Clock::now() + comm_.timeout();
  // Short sleeps at first keep small collectives fast; longer ones later keep a rank that
  // waits for a slow peer from stealing its CPU (ranks may share cores).
  auto pause = std::chrono::microseconds(5);
  while (!comm_.Test(requests_, description_)) {
    if (Clock::now() >= deadline) {
      std::ostringstream message;
      message << description_ << " did not complete within "
              << std::chrono::duration<double>(comm_.timeout()).count()
              << " s: another rank died or stalled before joining it";
      comm_.Abort(message.str());
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
  }
  for (auto& t : to_average_) t.div_(comm_.world_size());
}

}  // namespace

std::unique_ptr<Communicator> ConnectMpi(const WorldInfo& world, CollectiveOptions options) {
  return std::make_unique<MpiCommunicator>(world, options);
}

}  // namespace iisan::distributed
