// NCCL backend: a non-blocking communicator, grouped launches on the current stream, and
// completion and failures observed by polling against a deadline.
#include "distributed/nccl_communicator.h"

#include <nccl.h>

#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

namespace iisan::distributed {
namespace {

using Clock = std::chrono::steady_clock;

ncclDataType_t NcclType(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kHalf: return ncclFloat16;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kInt: return ncclInt32;
    case torch::kLong: return ncclInt64;
    case torch::kByte: return ncclUint8;
    case torch::kChar: return ncclInt8;
    default:
      throw std::invalid_argument("NCCL all-reduce: " + std::string(c10::toString(type)) + " is not supported");
  }
}

class NcclCommunicator;

class NcclWork : public Work {
 public:
  NcclWork(NcclCommunicator& comm, std::string description, std::unique_ptr<at::cuda::CUDAEvent> done)
      : comm_(comm), description_(std::move(description)), done_(std::move(done)) {}
  void Wait() override;

 private:
  NcclCommunicator& comm_;
  std::string description_;
  std::unique_ptr<at::cuda::CUDAEvent> done_;
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(Communicator& bootstrap, torch::Device device, CollectiveOptions options)
      : rank_(bootstrap.rank()), world_size_(bootstrap.world_size()), device_(device), options_(options) {
    if (!device_.is_cuda() || !device_.has_index()) {
      throw std::invalid_argument("NCCL communicator: " + device_.str() + " is not a CUDA device with an index");
    }
    ncclUniqueId id;
    auto id_bytes = torch::zeros({static_cast<int64_t>(sizeof(id))}, torch::kUInt8);
    if (rank_ == 0) {
      const ncclResult_t got = ncclGetUniqueId(&id);
      if (got != ncclSuccess) throw CollectiveError(std::string("ncclGetUniqueId: ") + ncclGetErrorString(got));
      std::memcpy(id_bytes.data_ptr(), &id, sizeof(id));
    }
    bootstrap.Broadcast(id_bytes, 0);
    std::memcpy(&id, id_bytes.data_ptr(), sizeof(id));

    c10::cuda::CUDAGuard guard(device_);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    // Non-blocking: a blocking ncclCommInitRank waits forever for a rank that never joins.
    config.blocking = 0;
    const ncclResult_t started = ncclCommInitRankConfig(&comm_, world_size_, id, rank_, &config);
    AwaitReady(started, DescribeCollective(*this, "ncclCommInitRank", 0), Clock::now() + options_.timeout);
  }

  ~NcclCommunicator() override {
    // Finalize flushes outstanding work and may wait on peers: bounded like everything else.
    c10::cuda::CUDAGuard guard(device_);
    const auto description = DescribeCollective(*this, "ncclCommFinalize", next_sequence_);
    AwaitReady(ncclCommFinalize(comm_), description, Clock::now() + options_.timeout);
    ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string_view backend() const override { return "nccl"; }
  torch::Device device() const override { return device_; }

  std::unique_ptr<Work> StartAllReduce(std::vector<torch::Tensor> tensors, ReduceOp op) override {
    CheckCollectiveInputs("all_reduce", tensors, device_, op);
    std::vector<ncclDataType_t> types;
    for (const auto& t : tensors) types.push_back(NcclType(t.scalar_type()));
    const ncclRedOp_t nccl_op = op == ReduceOp::kAverage ? ncclAvg : ncclSum;
    return Launch("all_reduce", TotalBytes(tensors), static_cast<int>(tensors.size()), [&](cudaStream_t stream) {
      for (size_t i = 0; i < tensors.size(); ++i) {
        auto* data = tensors[i].data_ptr();
        const auto queued =
            ncclAllReduce(data, data, static_cast<size_t>(tensors[i].numel()), types[i], nccl_op, comm_, stream);
        if (!Queued(queued)) return queued;
      }
      return ncclSuccess;
    });
  }

  void Broadcast(torch::Tensor tensor, int root) override {
    CheckCollectiveInputs("broadcast", {tensor}, device_);
    if (root < 0 || root >= world_size_) throw std::invalid_argument("broadcast: no rank " + std::to_string(root));
    Launch("broadcast", tensor.nbytes(), 1, [&](cudaStream_t stream) {
      return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.nbytes(), ncclUint8, root, comm_, stream);
    })->Wait();
  }

  torch::Tensor AllGather(const torch::Tensor& tensor) override {
    CheckCollectiveInputs("all_gather", {tensor}, device_);
    std::vector<int64_t> shape{world_size_};
    shape.insert(shape.end(), tensor.sizes().begin(), tensor.sizes().end());
    c10::cuda::CUDAGuard guard(device_);
    auto output = torch::empty(shape, tensor.options());
    Launch("all_gather", tensor.nbytes(), 1, [&](cudaStream_t stream) {
      return ncclAllGather(tensor.data_ptr(), output.data_ptr(), tensor.nbytes(), ncclUint8, comm_, stream);
    })->Wait();
    return output;
  }

  void Barrier() override {
    c10::cuda::CUDAGuard guard(device_);
    auto token = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat).device(device_));
    Launch("barrier", -1, 1, [&](cudaStream_t stream) {
      return ncclAllReduce(token.data_ptr(), token.data_ptr(), 1, ncclFloat32, ncclSum, comm_, stream);
    })->Wait();
  }

  // True once the event has fired; fails the job on an asynchronous NCCL error.
  bool Poll(const at::cuda::CUDAEvent& event, const std::string& description) {
    std::lock_guard lock(mutex_);
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm_, &state);
    if (state != ncclSuccess && state != ncclInProgress) Fail(description, state);
    return event.query();
  }

  [[noreturn]] void Fail(const std::string& description, ncclResult_t result) {
    Fail(description + " failed: " + ncclGetErrorString(result) + " (" + ncclGetLastError(comm_) +
         "); a peer rank has probably died");
  }

  [[noreturn]] void Fail(const std::string& message) {
    // Abort frees kernels that wait on peers that will never come, so the process can exit.
    ncclCommAbort(comm_);
    AbortJob(message);
  }

  std::chrono::milliseconds timeout() const { return options_.timeout; }

 private:
  // Enqueues `body`'s NCCL calls (it returns the first failure) as one group on the current
  // stream and records an event after them. Within a group the calls only queue; most errors
  // surface at ncclGroupEnd.
  template <typename Body>
  std::unique_ptr<Work> Launch(std::string_view op, int64_t bytes, int tensors, Body body) {
    std::lock_guard lock(mutex_);
    auto description = DescribeCollective(*this, op, next_sequence_++, bytes, tensors);
    c10::cuda::CUDAGuard guard(device_);
    auto stream = c10::cuda::getCurrentCUDAStream(device_.index());
    if (const auto started = ncclGroupStart(); !Queued(started)) Fail(description, started);
    if (const auto queued = body(stream.stream()); !Queued(queued)) Fail(description, queued);
    AwaitReady(ncclGroupEnd(), description, Clock::now() + options_.timeout);
    auto done = std::make_unique<at::cuda::CUDAEvent>();
    done->record(stream);
    return std::make_unique<NcclWork>(*this, std::move(description), std::move(done));
  }

  // ncclInProgress is a normal answer of a non-blocking communicator.
  static bool Queued(ncclResult_t result) { return result == ncclSuccess || result == ncclInProgress; }

  // Polls a non-blocking communicator until the call that returned `result` has completed.
  void AwaitReady(ncclResult_t result, const std::string& description, Clock::time_point deadline) {
    while (result == ncclInProgress) {
      if (Clock::now() >= deadline) {
        std::ostringstream message;
        message << description << " did not complete within " << std::chrono::duration<double>(options_.timeout).count()
                << " s: another rank died or stalled before joining it";
        Fail(message.str());
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      ncclCommGetAsyncError(comm_, &result);
    }
    if (result != ncclSuccess) Fail(description, result);
  }

  const int rank_;
  const int world_size_;
  const torch::Device device_;
  const CollectiveOptions options_;
  ncclComm_t comm_ = nullptr;
  std::mutex mutex_;  // NCCL communicators are not thread-safe; hooks may launch from autograd threads
  uint64_t next_sequence_ = 0;
};

void NcclWork::Wait() {
  const auto deadline = Clock::now() + comm_.timeout();
  auto pause = std::chrono::microseconds(5);
  while (!comm_.Poll(*done_, description_)) {
    if (Clock::now() >= deadline) {
      std::ostringstream message;
      message << description_ << " did not complete within " << std::chrono::duration<double>(comm_.timeout()).count()
              << " s: another rank died or stalled before joining it";
      comm_.Fail(message.str());
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

}  // namespace

std::unique_ptr<Communicator> ConnectNccl(Communicator& bootstrap, torch::Device device, CollectiveOptions options) {
  return std::make_unique<NcclCommunicator>(bootstrap, device, options);
}

}  // namespace iisan::distributed
